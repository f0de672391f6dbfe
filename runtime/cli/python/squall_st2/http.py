"""HTTP for pack code, over ``wasi:http``.

A pack's Python code has no sockets: its requests go through the host,
which applies the pack's ``allowed_hosts`` (``pack.yaml``) and refuses
private and metadata addresses unless the server allows them. A refused
request raises ``HTTPError`` whose message names the rule that refused it.

The functions mirror the ``requests`` calls most pack code makes, with
the same arguments (``params``, ``data``, ``json``, ``headers``,
``auth``, ``timeout``), and the response reads like its ``Response``::

    from squall_st2 import http

    health = http.get("https://api.example.com/health", timeout=5).json()
    created = http.post(
        "https://api.example.com/items",
        json={"name": "thing"},
        headers={"X-Request-Id": "42"},
        auth=("bot", "s3cret"),
    )
    created.raise_for_status()

What ``requests`` has beyond that is not here: sessions, cookies,
redirects (a 3xx is returned as it is), streamed or file uploads, and
proxies. ``requests`` itself (and ``urllib3``, ``http.client``,
``socket``) cannot connect: a pack's component may not open sockets, and
they fail with ``PermissionError``.
"""

import base64
import collections.abc
import json as _json
import urllib.parse

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler as _handler
from wit_world.imports import streams as _streams
from wit_world.imports import wasi_http_types as _t

__all__ = [
    "HTTPError",
    "Headers",
    "Response",
    "delete",
    "get",
    "head",
    "patch",
    "post",
    "put",
    "request",
]

_METHODS = {
    "GET": _t.Method_Get(),
    "HEAD": _t.Method_Head(),
    "POST": _t.Method_Post(),
    "PUT": _t.Method_Put(),
    "DELETE": _t.Method_Delete(),
    "PATCH": _t.Method_Patch(),
    "OPTIONS": _t.Method_Options(),
}

# How much is read per call on a stream.
_CHUNK = 64 * 1024
# The most ``blocking_write_and_flush`` takes at once.
_WRITE_CHUNK = 4096


class HTTPError(Exception):
    """A request that got no response (refused, unreachable, timed out), or
    a response with an error status passed to ``raise_for_status``. The
    response is in ``response`` when there is one."""

    def __init__(self, message, response=None):
        super().__init__(message)
        self.response = response


class Headers(collections.abc.MutableMapping):
    """A response's headers: looked up by name in any case, as in
    ``requests``. A header sent more than once has its values joined
    with ``", "``; iterating gives the names as the server wrote them."""

    def __init__(self, pairs=()):
        self._items = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                first, joined = self._items[key]
                self._items[key] = (first, f"{joined}, {value}")
            else:
                self._items[key] = (name, value)

    def __getitem__(self, name):
        return self._items[name.lower()][1]

    def __setitem__(self, name, value):
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name):
        del self._items[name.lower()]

    def __iter__(self):
        return (name for name, _ in self._items.values())

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return repr(dict(self.items()))


class Response:
    """A response, read whole.

    ``status_code`` (int), ``headers`` (``Headers``: any case finds a
    name), ``content`` (bytes), ``url``; ``text``, ``json()``, ``ok`` and
    ``raise_for_status()`` as in ``requests``.
    """

    def __init__(self, url, status_code, headers, content):
        self.url = url
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def ok(self):
        """Whether the status is below 400, as in ``requests``."""
        return self.status_code < 400

    @property
    def text(self):
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        """The body parsed as JSON; ``ValueError`` when it is not JSON."""
        return _json.loads(self.content)

    def raise_for_status(self):
        """Raise ``HTTPError`` when the status is 400 or above."""
        if not self.ok:
            raise HTTPError(f"HTTP {self.status_code} from {self.url}", self)

    def __repr__(self):
        return f"<Response [{self.status_code}]>"


def get(url, params=None, **kwargs):
    """``GET url``; see ``request`` for the keyword arguments."""
    return request("GET", url, params=params, **kwargs)


def head(url, **kwargs):
    """``HEAD url``; see ``request``."""
    return request("HEAD", url, **kwargs)


def post(url, data=None, json=None, **kwargs):
    """``POST url`` with a body; see ``request``."""
    return request("POST", url, data=data, json=json, **kwargs)


def put(url, data=None, **kwargs):
    """``PUT url`` with a body; see ``request``."""
    return request("PUT", url, data=data, **kwargs)


def patch(url, data=None, **kwargs):
    """``PATCH url`` with a body; see ``request``."""
    return request("PATCH", url, data=data, **kwargs)


def delete(url, **kwargs):
    """``DELETE url``; see ``request``."""
    return request("DELETE", url, **kwargs)


def request(
    method,
    url,
    params=None,
    data=None,
    json=None,
    headers=None,
    auth=None,
    timeout=None,
):
    """Send one request and read the whole response.

    - ``params``: a dict (or list of pairs) added to the URL's query.
    - ``data``: the body, as bytes, str, or a dict sent form-encoded.
    - ``json``: a value sent as a JSON body (with its content type).
    - ``headers``: a dict of header names to values.
    - ``auth``: a ``(user, password)`` pair for basic authentication.
    - ``timeout``: seconds to wait for the connection and for the first
      byte of the response.

    Redirects are not followed. Raises ``HTTPError`` when no response
    comes, and ``ValueError`` for a URL that is not absolute http(s).
    """
    scheme, authority, path = _split(url, params)
    body, content_type = _body(data, json)
    # By lowercase name: what the caller gives wins over what is derived
    # from the other arguments, and the length is always the body's.
    fields = {}
    if content_type:
        fields["content-type"] = content_type
    if auth is not None:
        user, password = auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        fields["authorization"] = f"Basic {token}"
    for name, value in (headers or {}).items():
        fields[str(name).lower()] = str(value)
    fields.pop("content-length", None)
    if body:
        fields["content-length"] = str(len(body))
    try:
        outgoing = _t.OutgoingRequest(
            _t.Fields.from_list([(k, v.encode("latin-1")) for k, v in fields.items()])
        )
    except (Err, UnicodeEncodeError) as e:
        reason = _name(e.value) if isinstance(e, Err) else "a value is not Latin-1"
        raise ValueError(f"invalid header for {url}: {reason}") from None
    method = method.upper()
    _set(outgoing.set_method, _METHODS.get(method) or _t.Method_Other(method), "method", url)
    _set(outgoing.set_scheme, _t.Scheme_Https() if scheme == "https" else _t.Scheme_Http(), "scheme", url)
    _set(outgoing.set_authority, authority, "host", url)
    _set(outgoing.set_path_with_query, path, "path", url)
    options = _t.RequestOptions()
    if timeout is not None:
        nanos = int(timeout * 1_000_000_000)
        options.set_connect_timeout(nanos)
        options.set_first_byte_timeout(nanos)
    request_body = outgoing.body()
    try:
        pending = _handler.handle(outgoing, options)
    except Err as e:
        request_body.__exit__(None, None, None)
        raise HTTPError(f"{method} {url}: {_describe(e.value)}") from None
    with request_body.write() as stream:
        sent = _send(stream, body, pending)
    if sent is None:
        try:
            _t.OutgoingBody.finish(request_body, None)
        except Err as e:
            sent = _describe(e.value)
    else:
        # Dropped unfinished: the host abandons the request's body.
        request_body.__exit__(None, None, None)
    with pending:
        pending.subscribe().block()
        answer = pending.get()
    if isinstance(answer, Ok) and isinstance(answer.value, Ok):
        incoming = answer.value.value
    elif isinstance(answer, Ok):
        raise HTTPError(f"{method} {url}: {_describe(answer.value.value)}")
    elif sent is not None:
        raise HTTPError(f"{method} {url}: sending the body failed: {sent}")
    else:
        raise HTTPError(f"{method} {url}: no HTTP response")
    with incoming:
        with incoming.headers() as fields_in:
            headers_in = Headers(
                (name, value.decode("latin-1")) for name, value in fields_in.entries()
            )
        status = incoming.status()
        content = _read(incoming.consume(), f"{method} {url}")
    return Response(url, status, headers_in, content)


def _body(data, json):
    """The body ``data`` or ``json`` makes, and its content type."""
    if json is not None:
        return _json.dumps(json).encode(), "application/json"
    if isinstance(data, dict):
        return urllib.parse.urlencode(data).encode(), "application/x-www-form-urlencoded"
    if isinstance(data, str):
        return data.encode(), None
    if data is not None:
        return bytes(data), None
    return b"", None


def _split(url, params):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{url}' is not an absolute http(s) URL")
    query = parts.query
    if params:
        extra = urllib.parse.urlencode(params)
        query = f"{query}&{extra}" if query else extra
    path = parts.path or "/"
    if query:
        path = f"{path}?{query}"
    return parts.scheme, parts.netloc, path


def _set(setter, value, what, url):
    try:
        setter(value)
    except Err:
        raise ValueError(f"invalid {what} in '{url}'") from None


def _send(stream, body, pending):
    """Write ``body``; None when all of it went out, else why not (the
    server may answer, and close, before it has read it all)."""
    try:
        for start in range(0, len(body), _WRITE_CHUNK):
            if pending.subscribe().ready():
                return "the server answered first"
            stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
    except Err as e:
        return _stream_error(e.value)
    return None


def _read(body, what):
    """The whole of an incoming body; the stream is dropped before the
    body, as ``wasi:http`` requires of a child resource."""
    chunks = []
    with body:
        with body.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_CHUNK))
                except Err as e:
                    if isinstance(e.value, _streams.StreamError_Closed):
                        break
                    raise HTTPError(
                        f"{what}: reading the response failed: {_stream_error(e.value)}"
                    ) from None
    return b"".join(chunks)


def _stream_error(error):
    """A ``stream-error`` as a message: the HTTP error behind it when the
    host gives one, else its own description."""
    if isinstance(error, _streams.StreamError_Closed):
        return "the connection was closed"
    cause = error.value
    code = _t.http_error_code(cause)
    if code is not None:
        return _describe(code)
    return cause.to_debug_string()


def _describe(code):
    """An ``ErrorCode`` as a message a person can act on."""
    if isinstance(code, _t.ErrorCode_InternalError) and code.value:
        return code.value
    known = {
        _t.ErrorCode_ConnectionRefused: "connection refused",
        _t.ErrorCode_ConnectionTimeout: "connection timed out",
        _t.ErrorCode_ConnectionReadTimeout: "the response did not come in time",
        _t.ErrorCode_DnsTimeout: "name resolution timed out",
    }
    for kind, text in known.items():
        if isinstance(code, kind):
            return text
    detail = getattr(code, "value", None)
    if detail is not None:
        return f"HTTP request failed: {_name(code)} ({detail})"
    return f"HTTP request failed: {_name(code)}"


def _name(value):
    """``ErrorCode_DnsError(...)`` as ``DnsError``."""
    kind = type(value).__name__
    return kind.split("_", 1)[-1]
