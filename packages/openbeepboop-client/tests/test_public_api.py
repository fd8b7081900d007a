"""The public surface: exactly these names, and importing does no work."""

from __future__ import annotations

import json
import subprocess
import sys

import openbeepboop

EXPORTED = {
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BadRequestError",
    "BulkSubmitError",
    "ChatCompletion",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "InternalServerError",
    "InvalidRequestError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobList",
    "JobStatus",
    "JobTimeoutError",
    "ModelList",
    "ModelNotServedWarning",
    "NotFoundError",
    "OpenBeepBoopError",
    "PermissionDeniedError",
    "PollEntry",
    "RateLimitError",
    "RequestTooLargeError",
    "SubmitWarning",
    "UnprocessableEntityError",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(openbeepboop.__all__) == EXPORTED
    assert len(openbeepboop.__all__) == len(EXPORTED)


def test_every_exported_name_resolves() -> None:
    for name in openbeepboop.__all__:
        assert getattr(openbeepboop, name) is not None, name


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    assert openbeepboop.__version__ == version("openbeepboop-client")


def test_every_error_derives_from_the_package_base() -> None:
    errors = [
        getattr(openbeepboop, name)
        for name in openbeepboop.__all__
        if name.endswith("Error") and isinstance(getattr(openbeepboop, name), type)
    ]
    assert len(errors) >= 20
    for error in errors:
        assert issubclass(error, openbeepboop.OpenBeepBoopError), error


def test_import_does_no_work_and_stays_light() -> None:
    # In a fresh interpreter: the optional pieces stay unloaded, and since
    # platformdirs is what locates the config file, no config was looked up.
    # (click is not listed: httpx itself imports it when it is installed.)
    probe = (
        "import sys, json\n"
        "import openbeepboop\n"
        "from openbeepboop import Client, AsyncClient\n"
        "heavy = ['tqdm', 'platformdirs', 'tomli_w', 'openbeepboop.cli']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []


def test_making_a_client_opens_no_connection() -> None:
    client = openbeepboop.Client(base_url="http://127.0.0.1:9", api_key="sk-" + "a" * 32)
    assert client._http is None  # created on the first request only
    client.close()
