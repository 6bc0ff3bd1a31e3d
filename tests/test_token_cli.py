"""`chctl token`'s own spellings skip argparse, and read exactly as argparse reads them."""

from __future__ import annotations

import pytest

from context_harness.client import chctl, token_cmd

SPELLINGS = [
    ["token", "linear"],
    ["token", "linear", "--json"],
    ["token", "linear", "--header"],
    ["token", "linear", "--min-valid", "300"],
    ["token", "linear", "--min-valid=0", "--json"],
    ["token", "linear", "--header", "--min-valid", "12.5"],
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_fast_path_reads_what_argparse_reads(spelling: list[str]) -> None:
    fast = chctl.parse_fast(spelling)
    slow = chctl.build_parser().parse_args(spelling)
    assert fast is not None
    assert (fast.name, fast.min_valid, fast.form, fast.func) == (slow.name, slow.min_valid, slow.form, slow.func)


@pytest.mark.parametrize(
    "spelling",
    [
        ["token"],
        ["token", "--json"],
        ["token", "linear", "--json", "--header"],
        ["token", "linear", "--json", "--json"],
        ["token", "linear", "--min-valid"],
        ["token", "linear", "--min-valid", "soon"],
        ["token", "linear", "extra"],
        ["token", "linear", "--help"],
    ],
)
def test_anything_else_goes_through_argparse(spelling: list[str]) -> None:
    assert token_cmd.parse_fast(spelling) is None
    assert chctl.parse_fast(spelling) is None


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "86401"])
def test_a_min_valid_out_of_range_is_refused_before_any_request(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert chctl.main(["token", "linear", "--min-valid", bad]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error[INVALID_PARAMS]" in err and "--min-valid" in err
