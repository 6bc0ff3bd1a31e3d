"""printable: the one rule for showing text that came from elsewhere, in chctl's output and in OAuth errors."""

import ast
import subprocess
import sys
from pathlib import Path

from context_harness.oauth.authorization_request import parse_callback
from context_harness.oauth.preflight import PAGE_TEXT_LIMIT, refusal
from context_harness.primitives import text
from context_harness.primitives.result import Failure
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable


def test_control_characters_never_reach_the_terminal() -> None:
    hostile = "ok\x1b]0;pwned\x07 \x9b31m\x7fline\r\nnext\ttab\x00"
    assert printable(hostile) == "ok]0;pwned 31mlinenexttab"


def test_other_text_is_kept_as_it_is() -> None:
    assert printable("café — 東京 ✓") == "café — 東京 ✓"
    assert printable(42) == "42"


def test_ascii_only_drops_everything_but_printable_ascii() -> None:
    # A bidi override would turn the text around on screen; a look-alike letter would pass for another.
    assert printable("invalid\u202e_client é\n", ascii_only=True) == "invalid_client "


def test_limit_counts_the_characters_shown() -> None:
    assert printable("\x1b\x1b\x1babcdef", 3) == "abc"
    assert printable("x" * 1000, SERVER_TEXT_LIMIT, ascii_only=True) == "x" * SERVER_TEXT_LIMIT
    assert printable("x" * 1000) == "x" * 1000  # no limit unless asked


def test_an_error_description_in_a_callback_is_shown_as_bounded_ascii() -> None:
    query = {"state": "s", "error": "server_error\n", "error_description": "é\x1b[2J" + "y" * 500}
    result = parse_callback(query, "s", "https://as.example", iss_required=False)
    assert isinstance(result, Failure)
    assert result.error == "the authorization server answered server_error: [2J" + "y" * (SERVER_TEXT_LIMIT - 3)


def test_an_error_page_becomes_one_line_of_its_words() -> None:
    page = b"<html><h1>Invalid\r\n\t redirect_uri</h1><p>caf\xc3\xa9 \xe2\x80\xae \x1b[31m</p></html>"
    assert refusal(400, {}, page, "http://127.0.0.1:1/callback") == "HTTP 400: Invalid redirect_uri caf [31m"
    long_page = refusal(400, {}, b"word\n" * 100, "http://127.0.0.1:1/callback")
    assert long_page == "HTTP 400: " + ("word " * 100)[:PAGE_TEXT_LIMIT]


def test_chctl_pays_for_no_import_to_get_it() -> None:
    tree = ast.parse(Path(text.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__"} and not any(isinstance(node, ast.Import) for node in tree.body)
    # One import inside a function, reached only for text that is not ASCII.
    lazy = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert lazy == ["unicodedata"]
    probe = "import sys; from context_harness.primitives.text import printable; printable('a\\x1b b'); "
    probe += "print('unicodedata' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_format_characters_never_reach_the_terminal() -> None:
    # U+202E turns what follows around on screen: `evil\u202egnp.exe` shows as `evilexe.png`.
    assert printable("docs\u202etxt.exe \u200b\u2066x\u2069 \ufeff") == "docstxt.exe x "
    assert printable("café\u200d 東京") == "café 東京"
