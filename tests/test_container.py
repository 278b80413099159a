"""The container deployment: the image's start, the Dockerfile and the compose file.

No Docker engine runs here, so the start is run as the image runs it:
deploy/entrypoint.sh under /bin/sh, with the project's own ``orderlog`` command on
PATH, the environment the Dockerfile sets (its /data made a test folder), and, where
the test runs as root, as the image's user (uid 10001). What only an engine would
do with the Dockerfile and docker-compose.yml (which drivers are installed, which
service waits for which, the addresses) is read from the files and held to what
orderlog and deploy/nginx.conf need.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderlog.storage.database import DRIVERS
from tests.support import ROOT, wait_for

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
IMAGE_UID = 10001  # the Dockerfile's `useradd --uid`


# -- the Dockerfile and the compose file, as data ------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, in order: (INSTRUCTION, its arguments)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def image_env() -> dict[str, str]:
    """The variables the image's ENV instructions set."""
    pairs = [p for op, args in dockerfile() if op == "ENV" for p in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolated(value: str, env: Mapping[str, str]) -> str:
    """``${NAME:-default}`` and ``${NAME}`` filled in as compose fills them in."""

    def fill(match: re.Match[str]) -> str:
        return env.get(match.group(1)) or (match.group(2) or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", fill, value)


def orderlog_nodes(services: dict[str, Any]) -> dict[str, Any]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in services.items() if s.get("build") == "."}


# -- the entrypoint, run -------------------------------------------------------------------


def entrypoint_env(**variables: str) -> dict[str, str]:
    """This environment without ORDERLOG_ settings, the image's variables, then these."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORDERLOG_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        **image_env(),
        "ORDERLOG_PORT": "0",
        "ORDERLOG_LOG_LEVEL": "WARNING",
        **variables,
    }


def as_image_user() -> dict[str, Any]:
    """Popen arguments that run a process as the image's user, as the container does."""
    if os.geteuid() != 0:
        pytest.skip(f"running as uid {IMAGE_UID}, the image's user, needs root")
    return {"user": IMAGE_UID, "group": IMAGE_UID, "extra_groups": []}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the image's user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="orderlog-container-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run_entrypoint(
    args: list[str], env: dict[str, str], cwd: Path, **user: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=60, **user,
    )  # fmt: skip


def _start(
    env: dict[str, str], log: Path, cwd: Path, **user: Any
) -> tuple[subprocess.Popen[bytes], int]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["/bin/sh", str(ENTRYPOINT)], cwd=cwd, env=env, stdout=out, stderr=out, **user
        )

    def started() -> re.Match[bytes] | str | None:
        match = re.search(rb"serving on http://0\.0\.0\.0:(\d+)", log.read_bytes())
        if match is None and process.poll() is not None:
            return log.read_bytes().decode(errors="replace")  # it ended instead: say why
        return match

    found = wait_for(started, what="the server to start")
    assert not isinstance(found, str), found
    return process, int(found.group(1))


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0  # exec'd: the shell was replaced by orderlog


def _status(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_entrypoint_provisions_the_token_then_serves_on_all_addresses(
    sqlite_url: str, tmp_path: Path
) -> None:
    secret = "container-secret-0123456789abcdef"
    (tmp_path / "token").write_text(secret + "\n")
    env = entrypoint_env(
        ORDERLOG_TOKEN_FILE=str(tmp_path / "token"), ORDERLOG_DATABASE_URL=sqlite_url
    )
    for start in range(2):  # the second start finds the token and leaves it as it is
        process, port = _start(env, tmp_path / f"start-{start}.log", tmp_path)
        try:
            assert _status(port, {}) == 401
            assert _status(port, {"Authorization": f"Bearer {secret}"}) == 200
        finally:
            _stop(process)


def test_a_token_file_the_image_user_cannot_read_stops_the_start_with_one_line(
    shared_dir: Path,
) -> None:
    user = as_image_user()
    secret = shared_dir / "orderlog_token"
    old = os.umask(0o077)
    try:  # as on the host: made by another user, under a strict umask
        secret.write_text("container-secret-0123456789abcdef\n")
    finally:
        os.umask(old)
    env = entrypoint_env(ORDERLOG_TOKEN_FILE=str(secret))
    started = run_entrypoint([], env, shared_dir, **user)
    assert started.returncode != 0
    assert started.stdout == ""
    (line,) = started.stderr.splitlines()
    assert str(secret) in line and f"uid {IMAGE_UID}" in line
    assert "chmod 644 deploy/orderlog_token" in line


def test_a_missing_token_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    env = entrypoint_env(ORDERLOG_TOKEN_FILE=str(missing))
    started = run_entrypoint([], env, tmp_path)
    assert started.returncode != 0
    (line,) = started.stderr.splitlines()
    assert str(missing) in line and "does not exist" in line


def test_a_plain_run_keeps_its_database_in_the_volume_and_says_how_to_make_a_token(
    tmp_path: Path,
) -> None:
    instructions = dockerfile()
    url = image_env()["ORDERLOG_DATABASE_URL"]
    assert url.startswith("sqlite:////"), url  # an absolute path: /app is not writable
    folder = str(Path(url.removeprefix("sqlite:///")).parent)
    (volume,) = [shlex.split(args) for op, args in instructions if op == "VOLUME"]
    assert volume == [folder]
    # Made the user's before VOLUME: a new volume takes the owner of the image's folder.
    (user,) = [args for op, args in instructions if op == "USER"]
    prepared = [
        i
        for i, (op, args) in enumerate(instructions)
        if op == "RUN" and f"mkdir {folder}" in args and f"chown {user}" in args
    ]
    assert prepared and prepared[0] < instructions.index(("VOLUME", folder))

    data = tmp_path / "data"
    data.mkdir()
    env = entrypoint_env(ORDERLOG_DATABASE_URL=url.replace(folder, str(data), 1))
    refused = run_entrypoint([], env, tmp_path)  # `docker run IMAGE`: no token yet
    assert refused.returncode != 0
    (line,) = refused.stderr.splitlines()
    assert "no API token" in line and "orderlog token create" in line, line

    # `docker run --rm -v DATA:/data IMAGE token create ...`, then `docker run ... IMAGE`.
    made = run_entrypoint(["token", "create", "--name", "admin", "--scopes", "admin"], env,
                          tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    process, port = _start(env, tmp_path / "start.log", tmp_path)
    try:
        assert _status(port, {}) == 401
        assert _status(port, {"Authorization": f"Bearer {made.stdout.strip()}"}) == 200
    finally:
        _stop(process)
    assert (data / "orderlog.db").exists()


def test_the_image_has_a_driver_for_every_database_orderlog_takes() -> None:
    (installs,) = [args for op, args in dockerfile() if op == "RUN" and "pip install" in args]
    (extras,) = re.findall(r"pip install '\.\[([\w,]+)\]'", installs)
    assert set(extras.split(",")) == {extra for _, extra in DRIVERS.values()}


# -- the compose file ------------------------------------------------------------------------


def test_compose_publishes_only_nginx_with_the_shipped_config() -> None:
    services = compose()["services"]
    assert [name for name, s in services.items() if "ports" in s] == ["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


def test_nginx_starts_after_the_nodes_but_waits_for_none_to_be_healthy() -> None:
    services = compose()["services"]
    waits = services["nginx"]["depends_on"]
    assert set(waits) == set(orderlog_nodes(services))
    assert {w["condition"] for w in waits.values()} == {"service_started"}


def test_nginx_asks_dockers_dns_for_the_alias_every_node_has() -> None:
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", config, re.M)
    # A name in a variable is resolved as requests come; one in an upstream, at start.
    assert not re.search(r"^\s*upstream ", config, re.M)
    (name, port) = re.findall(r"^\s*set \$orderlog_nodes ([\w.-]+):(\d+);", config, re.M)[0]
    assert re.search(r"^\s*proxy_pass http://\$orderlog_nodes;", config, re.M)
    assert port == image_env()["ORDERLOG_PORT"]
    services = compose()["services"]
    having = {n for n, s in services.items()
              if isinstance(s["networks"], dict)
              and name in (s["networks"]["internal"] or {}).get("aliases", [])}  # fmt: skip
    assert having == set(orderlog_nodes(services))


def test_nginx_reuses_its_ports_as_it_opens_a_connection_per_request() -> None:
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*proxy_set_header Connection close;", config, re.M)
    assert compose()["services"]["nginx"]["sysctls"] == {"net.ipv4.tcp_tw_reuse": 1}


@pytest.mark.parametrize("env", [{}, {"INTERNAL_NETWORK_PREFIX": "10.91.7"}],
                         ids=["defaults", "changed"])  # fmt: skip
def test_the_nodes_trust_nginx_at_its_address_in_the_internal_subnet(env: dict[str, str]) -> None:
    document = compose()
    services = document["services"]
    (config,) = document["networks"]["internal"]["ipam"]["config"]
    address = services["nginx"]["networks"]["internal"]["ipv4_address"]
    trusted = {n["environment"]["ORDERLOG_TRUSTED_PROXY"]
               for n in orderlog_nodes(services).values()}  # fmt: skip
    assert trusted == {address}  # one value, written once
    assert "${" in address and "${" in config["subnet"]  # variables, not fixed addresses
    subnet = ipaddress.ip_network(interpolated(config["subnet"], env))
    assert ipaddress.ip_address(interpolated(address, env)) in subnet
    if env:
        assert str(subnet) == f"{env['INTERNAL_NETWORK_PREFIX']}.0/24"
