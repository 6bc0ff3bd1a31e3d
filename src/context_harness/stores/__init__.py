"""Files we own under CH_HOME: tokens, client registrations, bindings, secrets."""
