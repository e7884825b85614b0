"""Token authentication: the tokens file, the Authorization header, and the 401 of the HTTP stack."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from ingest.auth import Tokens
from ingest.ratelimit import ClientLimits
from tests.helpers import SAMPLE, Answer, Stack, get, parse_answers, post

TOKENS = """\
# ingest tokens
s3cr3t web-frontend

0p3n-s3s4m3
k3y   batch jobs
"""


def basic(user: bytes, password: bytes) -> bytes:
    """An HTTP Basic Authorization value."""
    return b"Basic " + base64.b64encode(user + b":" + password)


def samples(count: int) -> bytes:
    """A JSON array of `count` samples."""
    return b"[" + b",".join([SAMPLE] * count) + b"]"


class FromTextTests(SynchronousTestCase):
    def test_named_token(self) -> None:
        """A line ``token name`` makes the token known under that name."""
        tokens = Tokens.from_text(TOKENS)
        self.assertEqual(tokens.identify(b"Bearer s3cr3t"), "web-frontend")

    def test_name_after_several_spaces(self) -> None:
        """Spaces between token and name are not part of either; a name may itself hold spaces."""
        tokens = Tokens.from_text(TOKENS)
        self.assertEqual(tokens.identify(b"Bearer k3y"), "batch jobs")

    def test_name_after_a_tab(self) -> None:
        """A tab separates token and name as a space does (a file edited by hand or written by a script)."""
        tokens = Tokens.from_text("s3cr3t\tweb-frontend\n")
        self.assertEqual(tokens.identify(b"Bearer s3cr3t"), "web-frontend")
        self.assertIsNone(tokens.identify(b"Bearer s3cr3t\tweb-frontend"))

    def test_default_name_is_line_number(self) -> None:
        """A token without a name is known as ``token-<line>``, counting comments and blank lines."""
        tokens = Tokens.from_text(TOKENS)
        self.assertEqual(tokens.identify(b"Bearer 0p3n-s3s4m3"), "token-4")
        self.assertEqual(Tokens.from_text("only\n").identify(b"Bearer only"), "token-1")

    def test_surrounding_whitespace(self) -> None:
        """Leading and trailing whitespace and CRLF line ends are not part of the token."""
        tokens = Tokens.from_text("  s3cr3t  \r\n")
        self.assertEqual(tokens.identify(b"Bearer s3cr3t"), "token-1")

    def test_comments_are_not_tokens(self) -> None:
        """A ``#`` line is a comment: what follows the ``#`` is no token."""
        tokens = Tokens.from_text(TOKENS)
        self.assertIsNone(tokens.identify(b"Bearer #"))
        self.assertIsNone(tokens.identify(b"Bearer ingest"))
        self.assertIsNone(tokens.identify(b"Bearer # ingest tokens"))

    def test_name_is_not_a_token(self) -> None:
        """The name after a token does not authenticate."""
        tokens = Tokens.from_text(TOKENS)
        self.assertIsNone(tokens.identify(b"Bearer web-frontend"))
        self.assertIsNone(tokens.identify(b"Bearer s3cr3t web-frontend"))

    def test_empty_file(self) -> None:
        """A file with no token is refused with ValueError: auth on with no way in is a mistake."""
        for text in ["", "\n\n", "# nothing yet\n", "   \n# a\n\t\n"]:
            with self.assertRaises(ValueError, msg=repr(text)):
                Tokens.from_text(text)


class IdentifyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tokens = Tokens.from_text(TOKENS)

    def test_bearer(self) -> None:
        """``Authorization: Bearer <token>`` names the client."""
        self.assertEqual(self.tokens.identify(b"Bearer s3cr3t"), "web-frontend")

    def test_token_scheme(self) -> None:
        """``Authorization: Token <token>``, what InfluxDB clients send, names the client."""
        self.assertEqual(self.tokens.identify(b"Token s3cr3t"), "web-frontend")

    def test_scheme_case_insensitive(self) -> None:
        """The scheme is matched in any case (RFC 9110 section 11.1); the token is not."""
        for scheme in [b"bearer", b"BEARER", b"bEaReR", b"token", b"TOKEN", b"basic", b"BASIC"]:
            value = basic(b"u", b"s3cr3t")[6:] if scheme.lower() == b"basic" else b"s3cr3t"
            self.assertEqual(self.tokens.identify(scheme + b" " + value), "web-frontend", scheme)
        self.assertIsNone(self.tokens.identify(b"Bearer S3CR3T"))

    def test_basic_password_is_token(self) -> None:
        """HTTP Basic whose password is the token names the client, whatever the user name."""
        self.assertEqual(self.tokens.identify(basic(b"influx", b"s3cr3t")), "web-frontend")
        self.assertEqual(self.tokens.identify(basic(b"", b"s3cr3t")), "web-frontend")
        self.assertEqual(self.tokens.identify(basic(b"anyone", b"0p3n-s3s4m3")), "token-4")

    def test_basic_user_is_not_token(self) -> None:
        """HTTP Basic with the token as user name and a wrong or empty password is refused."""
        self.assertIsNone(self.tokens.identify(basic(b"s3cr3t", b"")))
        self.assertIsNone(self.tokens.identify(basic(b"s3cr3t", b"wrong")))
        self.assertIsNone(self.tokens.identify(b"Basic " + base64.b64encode(b"s3cr3t")))

    def test_wrong_token(self) -> None:
        """An unknown token, a prefix or an extension of a known one, is refused with None."""
        for value in [b"Bearer wrong", b"Bearer s3cr3", b"Bearer s3cr3tx", b"Token wrong"]:
            self.assertIsNone(self.tokens.identify(value), value)
        self.assertIsNone(self.tokens.identify(basic(b"u", b"wrong")))

    def test_missing_header(self) -> None:
        """No Authorization header, or an empty one, is None."""
        self.assertIsNone(self.tokens.identify(None))
        self.assertIsNone(self.tokens.identify(b""))
        self.assertIsNone(self.tokens.identify(b"   "))

    def test_no_credentials(self) -> None:
        """A scheme with no credentials after it is None."""
        for value in [b"Bearer", b"Bearer ", b"Token   ", b"Basic", b"Basic "]:
            self.assertIsNone(self.tokens.identify(value), value)

    def test_bad_base64(self) -> None:
        """HTTP Basic credentials that are not valid base64 are None, not an exception."""
        self.assertEqual(self.tokens.identify(b"Basic dTpzM2NyM3Q="), "web-frontend")  # u:s3cr3t
        for credentials in [b"!!!!", b"dTpzM2NyM3Q", b"dTpzM2NyM3Q==", b"dTpz M2NyM3Q=", b"\xff\xfe"]:
            self.assertIsNone(self.tokens.identify(b"Basic " + credentials), credentials)

    def test_unknown_scheme(self) -> None:
        """A scheme other than Bearer, Token or Basic is None, even with a known token."""
        for value in [b"Digest s3cr3t", b"Bearers s3cr3t", b"s3cr3t", b"Bearer:s3cr3t", b"Negotiate s3cr3t"]:
            self.assertIsNone(self.tokens.identify(value), value)


class HttpAuthTests(SynchronousTestCase):
    """Through the HTTP stack with ``--auth-tokens``."""

    def setUp(self) -> None:
        self.stack = Stack(tokens=Tokens.from_text(TOKENS))

    def ask(self, request: bytes, stack: Stack | None = None) -> list[Answer]:
        stack = stack or self.stack
        channel, transport = stack.connect()
        channel.dataReceived(request)
        stack.settle()
        return parse_answers(transport.value())

    def assert_unauthorized(self, answer: Answer) -> None:
        self.assertEqual(answer.status, 401)
        self.assertEqual(answer.headers[b"www-authenticate"], b'Bearer realm="ingest"')
        self.assertEqual(answer.headers[b"content-type"], b"application/json")
        self.assertEqual(answer.json()["error"], "unauthorized")
        self.assertIsInstance(answer.json()["detail"], str)

    def test_post_without_token(self) -> None:
        """POST /metrics without a token is 401, WWW-Authenticate, a JSON error; its body is not parsed."""
        [answer] = self.ask(post(b"/metrics", SAMPLE))
        self.assert_unauthorized(answer)
        self.assertEqual(self.stack.pool.submitted, 0)
        self.assertEqual(self.stack.stored(), [])

    def test_write_routes_without_token(self) -> None:
        """The InfluxDB write routes are closed too."""
        for path in [b"/write", b"/api/v2/write"]:
            [answer] = self.ask(post(path, b"cpu value=1"))
            self.assert_unauthorized(answer)
        self.assertEqual(self.stack.pool.submitted, 0)

    def test_figures_without_token(self) -> None:
        """GET /stats and GET /metrics without a token are 401: the figures are not public."""
        for path in [b"/stats", b"/metrics"]:
            [answer] = self.ask(get(path))
            self.assert_unauthorized(answer)

    def test_wrong_token(self) -> None:
        """A wrong token is refused as a missing one is."""
        for credentials in [b"Bearer wrong", b"Basic !!", b"Digest x"]:
            [answer] = self.ask(post(b"/metrics", SAMPLE, b"Authorization: " + credentials))
            self.assert_unauthorized(answer)
        self.assertEqual(self.stack.stored(), [])

    def test_refused_before_continue(self) -> None:
        """With ``Expect: 100-continue`` the 401 comes from the head alone: no 100 Continue, the body is not
        waited for, and the connection closes (the client may or may not send the body it held back)."""
        channel, transport = self.stack.connect()
        channel.dataReceived(
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SAMPLE)
        )
        self.assertNotIn(b"100 Continue", transport.value())
        [answer] = parse_answers(transport.value())
        self.assert_unauthorized(answer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.stack.pool.submitted, 0)

    def test_continue_with_token(self) -> None:
        """With a valid token ``Expect: 100-continue`` gets its 100 Continue and the body is taken."""
        channel, transport = self.stack.connect()
        channel.dataReceived(
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nAuthorization: Bearer s3cr3t\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SAMPLE)
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        channel.dataReceived(SAMPLE)
        self.stack.settle()
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.status, 202)

    def test_connection_survives_refusal(self) -> None:
        """Without Expect, the refused body is skipped and the next request on the connection is answered."""
        answers = self.ask(post(b"/metrics", SAMPLE) + get(b"/ping"))
        self.assertEqual([answer.status for answer in answers], [401, 204])

    def test_open_paths(self) -> None:
        """/ping and /health need no token: load balancers and Telegraf probe them."""
        answers = self.ask(get(b"/ping") + get(b"/health") + get(b"/ping", b"Authorization: Bearer wrong"))
        self.assertEqual([answer.status for answer in answers], [204, 200, 204])

    def test_valid_token(self) -> None:
        """With a valid token, by any of the three schemes, every route answers as without auth."""
        for header in [
            b"Authorization: Bearer s3cr3t",
            b"Authorization: Token k3y",
            b"Authorization: " + basic(b"telegraf", b"0p3n-s3s4m3"),
        ]:
            answers = self.ask(
                post(b"/metrics", SAMPLE, header)
                + post(b"/write", b"cpu value=1", header)
                + get(b"/stats", header)
                + get(b"/metrics", header)
            )
            self.assertEqual([answer.status for answer in answers], [202, 204, 200, 200], header)
        self.assertEqual(len(self.stack.stored()), 6)

    def test_token_name_is_client(self) -> None:
        """The token's name, not the address, is the client for rate limits: two tokens from one address
        have a bucket each, and the address has none."""
        limits = ClientLimits(rate=10, burst=10)
        stack = Stack(inline=True, tokens=Tokens.from_text(TOKENS), client_limits=limits)
        web, batch = b"Authorization: Bearer s3cr3t", b"Authorization: Token k3y"
        answers = self.ask(post(b"/metrics", samples(10), web) + post(b"/metrics", samples(1), web), stack)
        self.assertEqual([answer.status for answer in answers], [202, 429])
        [answer] = self.ask(post(b"/metrics", samples(10), batch), stack)
        self.assertEqual(answer.status, 202)
        self.assertEqual(len(limits), 2)
        self.assertEqual(limits.take("192.168.1.1", 10, stack.clock.seconds()), 0.0)
        self.assertGreater(limits.take("web-frontend", 1, stack.clock.seconds()), 0.0)
