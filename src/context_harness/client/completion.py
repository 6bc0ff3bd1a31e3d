"""`chctl completion bash|zsh|fish`: a shell completion script made from chctl's own argument parser.

Commands, their options and fixed choices come from the parser, so a new command completes without
touching this file. Server names come from the daemon when the completion runs: the scripts call
`chctl completion names`, which prints the registry's and the configured servers' names, one a line,
and nothing at all when the daemon is not running (a tab press never starts it).
"""

from __future__ import annotations

import argparse
import sys

from context_harness.client.rpc_client import RpcError, call

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any

SHELLS = ("bash", "zsh", "fish")
NAME_DESTS = ("name",)  # positionals that take a server name


def add_completion_parser(sub: Any, root: argparse.ArgumentParser) -> None:
    """Register `completion`; its scripts are made from `root`, chctl's whole parser, once it is complete."""
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script. bash: `source <(chctl completion bash)` in ~/.bashrc; "
        "zsh: `source <(chctl completion zsh)` in ~/.zshrc (after compinit); "
        "fish: `chctl completion fish > ~/.config/fish/completions/chctl.fish`.",
    )
    p.add_argument("shell", choices=[*SHELLS, "names"], help="the shell; `names` lists server names for the scripts")
    p.set_defaults(func=cmd_completion, root_parser=root)


class Command:
    """What completion needs to know about one subcommand."""

    def __init__(self, name: str, parser: argparse.ArgumentParser, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.options: list[tuple[str, str]] = []  # (option string, help)
        self.takes_name = False
        self.choices: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.option_strings:
                self.options += [(option, action.help or "") for option in action.option_strings]
            elif isinstance(action, argparse._SubParsersAction):  # `service install` ...: and their options
                self.choices += list(action.choices)
                for nested in action.choices.values():
                    for a in nested._actions[1:]:  # [0] is --help
                        self.options += [(o, a.help or "") for o in a.option_strings if o not in dict(self.options)]
            elif action.dest in NAME_DESTS:
                self.takes_name = True
            elif action.choices:
                self.choices += [str(choice) for choice in action.choices]


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    found: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [Command(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return found


def cmd_completion(args: argparse.Namespace) -> int:
    if args.shell == "names":
        sys.stdout.write("".join(name + "\n" for name in server_names()))
        return 0
    render = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    sys.stdout.write(render(commands(args.root_parser)))
    return 0


def server_names() -> list[str]:
    try:
        registry = call("registry.list", autostart=False)["servers"]
        configured = call("status", autostart=False)["servers"]
    except (RpcError, OSError):
        return []
    return sorted({str(s["name"]) for s in [*registry, *configured]})


def _words(items: list[str]) -> str:
    return " ".join(items)


def bash_script(cmds: list[Command]) -> str:
    cases = "".join(
        f'        {c.name}) opts="{_words([o for o, _ in c.options])}"; names={int(c.takes_name)}; '
        f'choices="{_words(c.choices)}" ;;\n'
        for c in cmds
    )
    return f"""# chctl completion for bash: source <(chctl completion bash)
_chctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" opts="" names=0 choices=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{_words([c.name for c in cmds])} --help --version" -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{cases}    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
    elif [ "$names" = 1 ] && [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "$(chctl completion names 2>/dev/null)" -- "$cur"))
    elif [ -n "$choices" ] && [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "$choices" -- "$cur"))
    fi
}}
complete -o default -F _chctl chctl context-harness
"""


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def zsh_script(cmds: list[Command]) -> str:
    described = "\n".join("        " + _zsh_quote(c.name + ":" + c.help.replace(":", "\\:")) for c in cmds)
    cases = "".join(
        f"        {c.name}) opts=({_words([o for o, _ in c.options])}); names={int(c.takes_name)}; "
        f"choices=({_words(c.choices)}) ;;\n"
        for c in cmds
    )
    return f"""#compdef chctl context-harness
# chctl completion for zsh: source <(chctl completion zsh)   (after compinit)
_chctl() {{
    local -a commands opts choices
    local names=0
    commands=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe 'command' commands
        return
    fi
    case ${{words[2]}} in
{cases}    esac
    if [[ ${{words[CURRENT]}} == -* ]]; then
        compadd -- $opts --help
    elif (( names && CURRENT == 3 )); then
        compadd -- ${{(f)"$(chctl completion names 2>/dev/null)"}}
    elif (( ${{#choices}} && CURRENT == 3 )); then
        compadd -- $choices
    else
        _files
    fi
}}
compdef _chctl chctl context-harness
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(cmds: list[Command]) -> str:
    lines = [
        "# chctl completion for fish: chctl completion fish > ~/.config/fish/completions/chctl.fish",
        "complete -c chctl -f",
    ]
    for c in cmds:
        lines.append(f"complete -c chctl -n __fish_use_subcommand -a {c.name} -d {_fish_quote(c.help)}")
        seen = f"'__fish_seen_subcommand_from {c.name}'"
        for option, help_text in c.options:
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            lines.append(f"complete -c chctl -n {seen} {flag} -d {_fish_quote(help_text)}")
        if c.takes_name:
            lines.append(f"complete -c chctl -n {seen} -a '(chctl completion names 2>/dev/null)'")
        if c.choices:
            lines.append(f"complete -c chctl -n {seen} -a {_fish_quote(_words(c.choices))}")
    return "\n".join(lines) + "\n"
