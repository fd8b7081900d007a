"""What a job's submitter sees of a failure: no traceback, no node path, no secret."""

from __future__ import annotations

from openbeepboop_node.public_errors import public_message

LITELLM_STYLE = (
    "litellm.APIConnectionError: Invalid user message at index 0.\n"
    "Traceback (most recent call last):\n"
    '  File "/work/venv/lib/python3.11/site-packages/litellm/utils.py", line 9730, in f\n'
    '    raise Exception(f"invalid content type")\n'
    "Exception: invalid content type=bogus\n"
)


def test_the_traceback_is_cut_and_the_message_before_it_kept() -> None:
    text = public_message(LITELLM_STYLE)
    assert text == "litellm.APIConnectionError: Invalid user message at index 0."


def test_a_bare_traceback_leaves_its_exception_line() -> None:
    text = public_message(LITELLM_STYLE[LITELLM_STYLE.index("Traceback") :])
    assert text == "Exception: invalid content type=bogus"


def test_file_paths_are_masked_urls_and_model_names_kept() -> None:
    text = public_message(
        "cannot open /home/op/.local/state/openbeepboop/x.sqlite3 or C:\\Users\\op\\x.txt; "
        "model openai/gpt-4o, see https://platform.openai.com/docs/errors"
    )
    assert "/home" not in text and "Users" not in text
    assert text.count("<path>") == 2
    assert "openai/gpt-4o" in text and "https://platform.openai.com/docs/errors" in text


def test_secrets_and_the_endpoint_are_masked() -> None:
    text = public_message(
        "401 from http://10.0.0.5:8000/v1/chat/completions with key sk-secret",
        secrets=["sk-secret"],
        endpoints=["http://10.0.0.5:8000/v1/"],
    )
    assert text == "401 from <api_base>/chat/completions with key ***"


def test_an_empty_message_falls_back() -> None:
    assert public_message("  ", fallback="KeyError") == "KeyError"
