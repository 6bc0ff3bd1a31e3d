"""Services: the product's operations, each returning a `Result`."""
