"""docs/API.md, run: every example in it is sent to a live `twistd -n ingest` and its output compared.

The document's examples are fenced ``sh`` blocks of commands (``$ ...``), each followed by the
output it prints.  Four kinds of command, recognised strictly; any other line is an error:

- ``twistd -n ingest --port 8080 [OPTIONS]`` starts a server.  The requests after it in the
  document, up to the next ``twistd`` line, go to that server.  The test gives it a free port
  (``--port tcp:0:interface=127.0.0.1``) and a data directory of its own (``--data-dir``), and
  keeps the other options.
- ``printf ... > FILE`` (or ``printf ... | gzip > FILE``) makes a file that later examples send.
  It is run by ``sh`` in the examples' working directory and must print nothing.
- ``curl ...`` is an example.  In ``test_examples_python`` a small interpreter of curl's arguments
  (`parse_curl`: the few flags the document uses; any other flag is an error) sends the same
  request over a socket; in ``test_examples_curl``, when curl is installed, the command itself
  runs.  ``| python3 -m json.tool`` may follow it.
- ``COMMAND | nc localhost 8080`` is an example that sends raw bytes: ``sh`` runs COMMAND, and the
  test sends what it printed over a socket and reads until the server closes (nc itself is not
  run: its variants differ in when they exit).

``localhost:8080`` becomes the server's address.  Output is compared thus:

- with headers (``curl -i``, ``curl -I``, nc), answer by answer: the status line exactly, then
  every header but ``Date`` in order, then the body;
- a body that parses as JSON is compared as parsed JSON (numbers keep their type), other bodies as
  text;
- ``...`` in a line stands for any text within that line, a line holding only ``...`` for any
  number of lines (JSON bodies with ``...`` are then compared as text).

Setup commands run and servers start first, in the document's order and all at once (starting
is what takes time); then the examples run one by one, in order, each server seeing the requests
of the document in the order shown.  Every example is run and counted: `EXAMPLES` must be updated
with the document.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers_twistd import (
    LISTENING,
    ROOT,
    START_TIMEOUT,
    TWISTD,
    environment,
    pings,
    read_log,
    reap,
    temp_cwd,
)
from tests.http_answers import AnswerStream, parse_answers

DOCUMENT = os.path.join(ROOT, "docs", "API.md")
EXAMPLES = 64
"""How many examples (curl and nc commands) docs/API.md holds; every one must run."""

ADDRESS = "localhost:8080"
SERVER = re.compile(r"twistd -n ingest --port 8080(?: (?P<options>.*))?")
SETUP = re.compile(r"printf [^|>]*(?:\| gzip )?> [\w.-]+")
RAW = re.compile(r"(?P<producer>.+) \| nc localhost 8080")
JSON_TOOL = " | python3 -m json.tool"
STATUS_LINE = re.compile(r"HTTP/1\.[01] \d{3} ")
REQUEST_TIMEOUT = 30.0


# -- the document ----------------------------------------------------------------------------------


class Command(NamedTuple):
    """One ``$`` line of the document and the output shown under it."""

    text: str
    expected: str
    line: int


def read_commands(text: str) -> list[Command]:
    """Every command of every ``sh`` block, in order.

    Raises `ValueError` for a fenced block of another language (it would go unchecked), for a
    block whose first line is not a command, and for a block left open.
    """
    commands: list[Command] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        fence = lines[index]
        index += 1
        if not fence.startswith("```"):
            continue
        if fence != "```sh":
            raise ValueError(f"API.md:{index}: only ```sh blocks are allowed (they are run), not {fence!r}")
        if index >= len(lines) or not lines[index].startswith("$ "):
            raise ValueError(f"API.md:{index + 1}: a block begins with a command ($ ...)")
        while lines[index] != "```":
            if lines[index].startswith("$ "):
                start, output = index, []
                index += 1
                while index < len(lines) and lines[index] != "```" and not lines[index].startswith("$ "):
                    output.append(lines[index])
                    index += 1
                if index >= len(lines):
                    raise ValueError(f"API.md:{start + 1}: the block is not closed")
                commands.append(Command(lines[start][2:], "\n".join(output), start + 1))
        index += 1
    return commands


# -- comparing outputs -----------------------------------------------------------------------------


class Shown(NamedTuple):
    """An answer as the document shows it: text, without the ``Date`` header."""

    status_line: str
    headers: list[str]
    body: str


def shown_answers(data: bytes, head_request: bool = False) -> list[Shown]:
    """The answers in what curl -i or nc printed (read by `parse_answers`), as the document shows them."""
    return [
        Shown(
            answer.status_line.decode("latin-1"),
            [line.decode("latin-1") for line in answer.lines if not line.lower().startswith(b"date:")],
            answer.body.decode("utf-8"),
        )
        for answer in parse_answers(data, head_request)
    ]


def expected_answers(text: str) -> list[Shown]:
    """The answers shown under a command with headers: status line, headers, blank line, body."""
    lines = text.split("\n")
    answers = []
    index = 0
    while index < len(lines):
        status_line = lines[index]
        if not STATUS_LINE.match(status_line):
            raise ValueError(f"expected a status line, not {status_line!r}")
        index += 1
        headers = []
        while index < len(lines) and lines[index]:
            headers.append(lines[index])
            index += 1
        index += 1  # the blank line
        body = []
        if not status_line.split(" ")[1].startswith("1"):
            while index < len(lines) and not STATUS_LINE.match(lines[index]):
                body.append(lines[index])
                index += 1
        answers.append(Shown(status_line, headers, "\n".join(body).rstrip("\n")))
    return answers


def matches(expected: str, actual: str) -> bool:
    """Text equality where ``...`` is any text in a line, and a line ``...`` any number of lines."""
    pattern = []
    for line in expected.split("\n"):
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append("[^\n]*?".join(map(re.escape, line.split("..."))) + "\n")
    return re.fullmatch("".join(pattern), actual + "\n") is not None


def body_matches(expected: str, actual: str) -> bool:
    expected, actual = expected.rstrip("\n"), actual.rstrip("\n")
    if "..." not in expected:
        try:
            document = json.loads(expected)
        except ValueError:
            pass
        else:
            try:
                return _canonical(json.loads(actual)) == _canonical(document)
            except ValueError:
                return False
    return matches(expected, actual)


def _canonical(document: object) -> str:
    """JSON text that tells 1 from 1.0 and true from 1, with keys in one order."""
    return json.dumps(document, sort_keys=True)


def output_matches(expected: str, output: bytes, with_headers: bool, head_request: bool) -> bool:
    if not with_headers:
        return body_matches(expected, output.decode("utf-8"))
    wanted = expected_answers(expected.rstrip("\n"))
    got = shown_answers(output, head_request)
    return len(wanted) == len(got) and all(
        w.status_line == g.status_line
        and len(w.headers) == len(g.headers)
        and all(matches(a, b) for a, b in zip(w.headers, g.headers, strict=True))
        and body_matches(w.body, g.body)
        for w, g in zip(wanted, got, strict=True)
    )


def shown(output: bytes, with_headers: bool, head_request: bool) -> str:
    """An output as the document would show it: for a failure's message."""
    if not with_headers:
        return output.decode("utf-8", "replace")
    parts = []
    for answer in shown_answers(output, head_request):
        parts.append("\n".join([answer.status_line, *answer.headers, "", answer.body]))
    return "\n".join(parts)


# -- curl, interpreted -----------------------------------------------------------------------------


@dataclass
class CurlRequest:
    """What a curl command line asks for: the subset of curl that the document uses."""

    method: str = ""
    path: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    with_headers: bool = False
    head_request: bool = False

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None


def parse_curl(command: str, cwd: str) -> CurlRequest:
    """Read ``curl ARGUMENTS``: -i, -I, -s, -X, -H, -d, --data-binary (literal or @file), -u, and a URL.

    Raises `ValueError` for anything else, so that an example using more of curl fails instead of
    being half understood.  Quoting is the shell's (`shlex`); shell expansions are refused.
    """
    if re.search(r"[$`|;&<>()\\]", re.sub(r"'[^']*'", "", command)):
        raise ValueError(f"shell syntax in a curl example: {command}")
    words = shlex.split(command)
    if words[0] != "curl":
        raise ValueError(f"not a curl command: {command}")
    request = CurlRequest()
    url = None
    arguments = iter(words[1:])
    for word in arguments:
        if word == "-i":
            request.with_headers = True
        elif word == "-I":
            request.with_headers = request.head_request = True
            request.method = "HEAD"
        elif word == "-s":
            pass
        elif word == "-X":
            request.method = next(arguments)
        elif word == "-H":
            name, colon, value = next(arguments).partition(":")
            if not colon or not value.strip():
                raise ValueError(f"-H wants 'Name: value': {command}")
            request.headers.append((name, value.strip()))
        elif word in ("-d", "--data-binary"):
            if request.body is not None:
                raise ValueError(f"one -d or --data-binary only: {command}")
            data = next(arguments)
            if data.startswith("@"):
                with open(os.path.join(cwd, data[1:]), "rb") as file:
                    request.body = file.read()
                if word == "-d":  # curl -d @file drops carriage returns and newlines
                    request.body = request.body.replace(b"\r", b"").replace(b"\n", b"")
            else:
                request.body = data.encode("utf-8")
        elif word == "-u":
            credentials = base64.b64encode(next(arguments).encode("utf-8")).decode("ascii")
            request.headers.append(("Authorization", f"Basic {credentials}"))
        elif word.startswith("-"):
            raise ValueError(f"curl option {word} is not interpreted by this test: {command}")
        elif url is None:
            url = word
        else:
            raise ValueError(f"one URL only: {command}")
    if url is None:
        raise ValueError(f"no URL: {command}")
    address, slash, path = url.removeprefix("http://").partition("/")
    if address != ADDRESS:
        raise ValueError(f"examples address {ADDRESS}: {command}")
    request.path = slash + path
    if not request.method:
        request.method = "GET" if request.body is None else "POST"
    return request


def send_curl(request: CurlRequest, port: int) -> bytes:
    """Send `request` as curl does; returns what curl would print."""
    lines = [f"{request.method} {request.path} HTTP/1.1"]
    custom = {name.lower() for name, _ in request.headers}
    defaults = [("Host", f"127.0.0.1:{port}"), ("User-Agent", "curl/interpreted"), ("Accept", "*/*")]
    fields = [(name, value) for name, value in defaults if name.lower() not in custom] + request.headers
    body = request.body
    chunked = (request.header("Transfer-Encoding") or "").lower() == "chunked"
    if body is not None:
        if chunked:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        elif "content-length" not in custom:
            fields.append(("Content-Length", str(len(body))))
        if "content-type" not in custom:
            fields.append(("Content-Type", "application/x-www-form-urlencoded"))
    head = "\r\n".join(lines + [f"{name}: {value}" for name, value in fields]) + "\r\n\r\n"
    expect_continue = body is not None and (request.header("Expect") or "").lower() == "100-continue"
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as connection:
        stream = AnswerStream(connection)
        if expect_continue:  # curl waits for 100 Continue before it sends the body
            connection.sendall(head.encode("latin-1"))
            answers = [stream.next_answer(request.head_request)]
            if answers[0].status == 100:
                connection.sendall(body or b"")
                answers += stream.receive(1, request.head_request)
        else:
            connection.sendall(head.encode("latin-1") + (body or b""))
            answers = stream.receive(1, request.head_request)
    if request.with_headers:
        return b"".join(answer.raw for answer in answers)
    return answers[-1].body


def send_raw(producer: str, port: int, cwd: str) -> bytes:
    """``PRODUCER | nc localhost PORT``: send what `producer` prints, read until the server closes."""
    data = subprocess.run(["sh", "-c", producer], cwd=cwd, capture_output=True, check=True, timeout=30).stdout
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as connection:
        connection.sendall(data)
        while chunk := connection.recv(65536):
            received += chunk
    return received


def json_tool(output: bytes) -> bytes:
    """What ``python3 -m json.tool`` prints for `output`."""
    return (json.dumps(json.loads(output), indent=4) + "\n").encode("utf-8")


def run_curl(command: str, port: int, cwd: str) -> bytes:
    """Run the curl command itself, against `port`; returns its standard output."""
    command = command.replace(ADDRESS, f"127.0.0.1:{port}")
    command = "curl -q" + command.removeprefix("curl")  # -q: no ~/.curlrc
    command = command.replace("python3 -m json.tool", f"{shlex.quote(sys.executable)} -m json.tool")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=60)
    if done.returncode:
        raise AssertionError(f"{command} exited {done.returncode}: {done.stderr.decode()}")
    return done.stdout


# -- running the examples --------------------------------------------------------------------------


def whole(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    """`pattern` matched against all of `text`, which `kind_of` has already checked."""
    match = pattern.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} does not match {pattern.pattern!r}")
    return match


def kind_of(command: str) -> str:
    """``server``, ``setup``, ``curl`` or ``raw``; raises `ValueError` for any other command."""
    if SERVER.fullmatch(command):
        return "server"
    if SETUP.fullmatch(command):
        return "setup"
    if command.startswith("curl "):
        return "curl"
    if RAW.fullmatch(command):
        return "raw"
    raise ValueError(f"a command this test does not run: {command}")


def run_example(text: str, kind: str, port: int, cwd: str, real_curl: bool) -> tuple[bytes, bool, bool]:
    """Run one example; returns its output and how to read it (with headers; of a HEAD request)."""
    if kind == "raw":
        return send_raw(whole(RAW, text).group("producer"), port, cwd), True, False
    curl, tool, rest = text.partition(JSON_TOOL)
    if rest:
        raise ValueError(f"only {JSON_TOOL!r} may follow a curl command: {text}")
    request = parse_curl(curl, cwd)  # also when curl runs: the document keeps to the subset
    if tool and request.with_headers:
        raise ValueError(f"json.tool reads a body, not headers: {text}")
    if real_curl:
        output = run_curl(text, port, cwd)
    else:
        output = send_curl(request, port)
        if tool:
            output = json_tool(output)
    return output, request.with_headers, request.head_request


# -- the servers -----------------------------------------------------------------------------------


class Server:
    """One ``twistd -n ingest`` of the document, started in the background."""

    def __init__(self, case: SynchronousTestCase, cwd: str, number: int, options: list[str]) -> None:
        if TWISTD is None:
            case.fail("twistd is not installed: pip install . first")
        for option in options:
            if option in ("--port", "--data-dir", "--config"):
                case.fail(f"the test sets {option} itself")
        self.log_path = os.path.join(cwd, f"twistd-{number}.out")
        log = open(self.log_path, "wb")
        case.addCleanup(log.close)
        twistd = [TWISTD, "-n", "--pidfile=", "ingest", "--port", "tcp:0:interface=127.0.0.1"]
        self.process = subprocess.Popen(
            [*twistd, "--data-dir", f"data-{number}", *options],
            cwd=cwd,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        case.addCleanup(reap, self.process)
        self.port = 0

    def wait_ready(self, deadline: float) -> None:
        """Poll (bounded) for the ``listening`` line, then until ``GET /ping`` is answered."""
        while time.monotonic() < deadline:
            match = LISTENING.search(read_log(self.log_path))
            if match and pings(int(match.group(1)), None, time.monotonic() + 5):
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"twistd did not start:\n{read_log(self.log_path)}")


# -- the tests -------------------------------------------------------------------------------------


class DocumentTests(SynchronousTestCase):
    def test_examples_are_counted(self) -> None:
        """API.md holds `EXAMPLES` examples, and each of its commands is of a kind this test runs."""
        with open(DOCUMENT, encoding="utf-8") as document:
            commands = read_commands(document.read())
        kinds = [kind_of(command.text) for command in commands]
        self.assertGreater(EXAMPLES, 0)
        self.assertEqual(kinds.count("curl") + kinds.count("raw"), EXAMPLES)
        self.assertEqual(kinds[0], "server", "the first command starts the server")

    def test_comparison_is_strict(self) -> None:
        """A changed status, header, header order, body or JSON number type is a difference."""
        output = b"HTTP/1.1 202 Accepted\r\nDate: x\r\nContent-Type: a\r\nContent-Length: 14\r\n\r\n"
        output += b'{"accepted":1}'
        good = 'HTTP/1.1 202 Accepted\nContent-Type: a\nContent-Length: 14\n\n{"accepted": 1}'
        self.assertTrue(output_matches(good, output, True, False))
        self.assertTrue(output_matches(good.replace("14", "..."), output, True, False))
        for bad in (
            good.replace("202", "200"),
            good.replace("Content-Type: a\n", ""),
            'HTTP/1.1 202 Accepted\nContent-Length: 14\nContent-Type: a\n\n{"accepted":1}',
            good.replace("1}", "2}"),
            good.replace("1}", "1.0}"),
            good + "\nmore",
        ):
            self.assertFalse(output_matches(bad, output, True, False), bad)
        self.assertTrue(matches("a\n...\nd", "a\nb\nc\nd"))
        self.assertTrue(matches("a\n...\nb", "a\nb"))
        self.assertTrue(matches("a ... c", "a b c"))
        self.assertFalse(matches("a ... c", "a b\nc"))
        self.assertFalse(matches("a\nb", "a\nb\nc"))


class ExampleTests(SynchronousTestCase):
    """Every example of docs/API.md prints what the document shows."""

    def test_examples_python(self) -> None:
        """The examples, with the curl commands interpreted in Python (CI may have no curl)."""
        self.check_examples(real_curl=False)

    def test_examples_curl(self) -> None:
        """The examples again, with the curl commands run by curl itself, where it is installed."""
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed; test_examples_python ran the examples")
        self.check_examples(real_curl=True)

    def check_examples(self, real_curl: bool) -> None:
        """Start the document's servers, run its examples in order, report every difference."""
        with open(DOCUMENT, encoding="utf-8") as document:
            commands = read_commands(document.read())
        cwd = temp_cwd(self)
        servers: list[Server] = []
        plan: list[tuple[Command, str, Server]] = []
        for command in commands:
            kind = kind_of(command.text)
            if kind in ("server", "setup"):
                self.assertEqual(command.expected.strip(), "", f"API.md:{command.line}: shows no output")
            if kind == "server":
                options = whole(SERVER, command.text).group("options")
                servers.append(Server(self, cwd, len(servers) + 1, shlex.split(options or "")))
            elif kind == "setup":
                done = subprocess.run(["sh", "-c", command.text], cwd=cwd, capture_output=True, timeout=30)
                self.assertEqual((done.returncode, done.stdout, done.stderr), (0, b"", b""), command.text)
            else:
                self.assertTrue(servers, f"API.md:{command.line}: no server started before this example")
                plan.append((command, kind, servers[-1]))
        deadline = time.monotonic() + 2 * START_TIMEOUT
        for server in servers:
            server.wait_ready(deadline)

        failures = []
        for command, kind, server in plan:
            output, with_headers, head_request = run_example(command.text, kind, server.port, cwd, real_curl)
            if not output_matches(command.expected, output, with_headers, head_request):
                failures.append(
                    f"API.md:{command.line}: $ {command.text}\n--- shown:\n{command.expected}\n"
                    f"--- printed (Date left out):\n{shown(output, with_headers, head_request)}\n"
                )
        if failures:
            self.fail(f"{len(failures)} examples of API.md differ:\n\n" + "\n".join(failures))
        self.assertEqual(len(plan), EXAMPLES, "every example ran")
