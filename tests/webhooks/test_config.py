"""Webhook configuration: `[workspaces.NAME]` tables in the TOML config (real files) and the flags, and
a real server that sends each workspace's events to its own URL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest
from standardwebhooks import Webhook

from overnight.webhooks.config import WebhookConfigError, WebhookTarget, resolve_webhook_targets
from tests.api.helpers import make_requests, wait_for_end
from tests.server import REPO_ROOT, ServerProcess
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import new_secret

ROUTES = '[backends.fake]\ntype = "fake"\n\n[[routes]]\nmodel = "*"\nbackend = "fake"\n'


def write_config(tmp_path: Path, workspaces: str) -> Path:
    path = tmp_path / "overnight.toml"
    path.write_text(workspaces + "\n" + ROUTES)
    return path


def resolve(config: Path | None = None, url: str | None = None, secret: str | None = None) -> dict[str, WebhookTarget]:
    return resolve_webhook_targets(config_file=config, flag_url=url, flag_secret=secret, flag_workspace="default")


def test_config_tables_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inline, from_env = new_secret(), new_secret()
    monkeypatch.setenv("TEAM_B_SECRET", from_env)
    config = write_config(
        tmp_path,
        f'[workspaces.team-a]\nwebhook_url = "https://a.example/hook"\nwebhook_secret = "{inline}"\n\n'
        '[workspaces.team-b]\nwebhook_url = "http://b.example:8080/x"\nwebhook_secret_env = "TEAM_B_SECRET"\n\n'
        "[workspaces.quiet]\n",
    )
    flag_secret = new_secret()
    assert resolve(config, "http://127.0.0.1:1/d", flag_secret) == {
        "team-a": WebhookTarget("https://a.example/hook", inline),
        "team-b": WebhookTarget("http://b.example:8080/x", from_env),
        "default": WebhookTarget("http://127.0.0.1:1/d", flag_secret),
    }
    assert resolve() == {}
    assert inline not in repr(resolve(config))  # secrets stay out of reprs (and so out of logs)


@pytest.mark.parametrize(
    ("workspaces", "message"),
    [
        ('[workspaces.a]\nwebhook_url = "https://x/h"\n', "workspaces.a: webhook_url needs webhook_secret"),
        ('[workspaces.a]\nwebhook_url = "ftp://x/h"\nwebhook_secret = "SECRET"\n', "must be http:// or https://"),
        ('[workspaces.a]\nwebhook_url = "https://x/h"\nwebhook_secret = "s3cr3t"\n', "starts with 'whsec_'"),
        ('[workspaces.a]\nwebhook_url = "https://x/h"\nwebhook_secret = "whsec_!!"\n', "followed by base64"),
        ('[workspaces.a]\nwebhook_url = "https://x/h"\nwebhook_secret = "whsec_c2hvcnQ="\n', "24 to 64 bytes, got 5"),
        (
            '[workspaces.a]\nwebhook_url = "https://x/h"\nwebhook_secret_env = "UNSET_WEBHOOK_KEY_VARIABLE"\n',
            "is not set",
        ),
        ('[workspaces.a]\nwebhook_secret = "SECRET"\n', "a webhook secret without webhook_url"),
        ('[workspaces.a]\nwebhook_uri = "https://x/h"\n', "workspaces.a.webhook_uri: unknown setting"),
        (
            '[workspaces.a]\nwebhook_url = "https://x/h"\nwebhook_secret = "SECRET"\nwebhook_secret_env = "E"\n',
            "not both",
        ),
        ("workspaces = 3\n", "must be a table"),
    ],
)
def test_bad_workspace_tables_are_named(tmp_path: Path, workspaces: str, message: str) -> None:
    secret = new_secret()
    with pytest.raises(WebhookConfigError, match=message) as raised:
        resolve(write_config(tmp_path, workspaces.replace("SECRET", secret)))
    assert secret not in str(raised.value)


def test_bad_flags(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="needs --webhook-secret"):
        resolve(url="https://x/h")
    with pytest.raises(WebhookConfigError, match="needs --webhook-url"):
        resolve(secret=new_secret())
    with pytest.raises(WebhookConfigError, match="both configure a webhook for workspace 'default'"):
        config = write_config(
            tmp_path, f'[workspaces.default]\nwebhook_url = "https://x/h"\nwebhook_secret = "{new_secret()}"\n'
        )
        resolve(config, "https://y/h", new_secret())


def test_serve_refuses_a_bad_webhook_setting_clearly(tmp_path: Path) -> None:
    bad = "whsec_" + base64.b64encode(b"too short").decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERNIGHT_")} | {"OVERNIGHT_WEBHOOK_SECRET": bad}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "overnight",
            "serve",
            "--backend",
            "fake",
            "--data-dir",
            str(tmp_path),
            "--webhook-url",
            "http://127.0.0.1:9/h",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "24 to 64 bytes, got 9" in done.stderr and bad not in done.stderr
    assert "Traceback" not in done.stderr


def test_each_workspace_gets_its_own_events(
    tmp_path: Path, server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    secret = new_secret()
    with Receiver() as receiver:
        config = write_config(
            tmp_path,
            f'[workspaces.team]\nwebhook_url = "{receiver.url}"\nwebhook_secret_env = "TEAM_SECRET"\n',
        )
        server = server_factory(
            "--config",
            str(config),
            "--api-key",
            "team-key:team",
            "--api-key",
            "other-key:other",
            env={"TEAM_SECRET": secret},
        )
        team, other = make_client(server, api_key="team-key"), make_client(server, api_key="other-key")
        quiet = other.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        loud = team.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        wait_for_end(other, quiet.id)
        wait_for_end(team, loud.id)
        [delivery] = receiver.wait_for(1)
        assert Webhook(secret).verify(delivery.body, delivery.headers)["data"]["id"] == loud.id
        time.sleep(1.5)
        assert receiver.count() == 1  # the other workspace has no webhook
