"""nodeagent/spdy.py: the SPDY/3.1 frame codec, against hand-computed bytes, itself (every
frame type, any split of the stream) and frames recorded from the real kubectl 1.35."""

from __future__ import annotations

import base64
import json
import os
import zlib

import pytest

from nodeagent import spdy

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")


def test_dictionary_is_spdy3s():
    # The zlib dictionary id (Adler-32) every SPDY/3 peer checks, and its length in the draft.
    assert (zlib.adler32(spdy.DICTIONARY), len(spdy.DICTIONARY)) == (0xE3C6A7C2, 1423)


@pytest.mark.parametrize("frame, wire", [
    (spdy.DataFrame(3, b"hi", fin=True), b"\x00\x00\x00\x03\x01\x00\x00\x02hi"),
    (spdy.DataFrame(5, b""), b"\x00\x00\x00\x05\x00\x00\x00\x00"),
    (spdy.Ping(7), b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x07"),
    (spdy.RstStream(3, spdy.RST_CANCEL), b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05"),
    (spdy.GoAway(9, 0), b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00\x00"),
    (spdy.WindowUpdate(1, 65536), b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x01\x00\x01\x00\x00"),
    (spdy.Settings(((0, 7, 65536),)),
     b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x07\x00\x01\x00\x00"),
], ids=["data-fin", "data-empty", "ping", "rst-cancel", "goaway", "window-update", "settings"])
def test_frames_without_headers_have_their_draft_layout(frame, wire):
    assert spdy.Framer().encode(frame) == wire
    assert spdy.Framer().feed(wire) == [frame]


def test_header_block_layout():
    block = spdy.encode_header_block((("streamtype", "error"), ("port", "80"), ("port", "81")))
    assert block == (b"\x00\x00\x00\x02" b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"
                     b"\x00\x00\x00\x04port\x00\x00\x00\x0580\x0081")
    assert spdy.decode_header_block(block) == (("streamtype", "error"), ("port", "80"), ("port", "81"))


def test_header_names_must_be_lowercase():
    with pytest.raises(ValueError, match="lowercase"):
        spdy.encode_header_block((("streamType", "error"),))


FRAMES = [
    spdy.SynStream(1, (("streamtype", "error"),)),
    spdy.SynStream(3, (("streamtype", "stdin"),), priority=2),
    spdy.SynReply(1, ()),
    spdy.SynReply(3, (("x", "y"),), fin=True),
    spdy.HeadersFrame(3, (("a", "b"),)),
    spdy.DataFrame(3, b"x" * 70000, fin=True),
    spdy.Ping(2),
    spdy.GoAway(3),
    spdy.UnknownFrame(42, 0, b"abc"),
]


def test_a_sequence_decodes_to_itself_however_it_is_split():
    # Header blocks share one zlib stream per direction: the order matters, and must survive.
    sender = spdy.Framer()
    wire = b"".join(sender.encode(f) for f in FRAMES)
    assert spdy.Framer().feed(wire) == FRAMES
    for step in (1, 7, 4096):
        receiver = spdy.Framer()
        got: list[spdy.Frame] = []
        for i in range(0, len(wire), step):
            got += receiver.feed(wire[i:i + step])
        assert got == FRAMES, step


def test_a_header_block_out_of_order_does_not_inflate():
    sender = spdy.Framer()
    first = sender.encode(spdy.SynStream(1, (("streamtype", "error"),)))
    second = sender.encode(spdy.SynStream(3, (("streamtype", "stdout"),)))
    assert spdy.Framer().feed(first)[0] == spdy.SynStream(1, (("streamtype", "error"),))
    with pytest.raises(spdy.ProtocolError, match="inflate"):
        spdy.Framer().feed(second)  # its zlib stream lacks the first block


@pytest.mark.parametrize("wire, problem", [
    (b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", "version 2"),
    (b"\x80\x03\x00\x03\x00\x00\x00\x02\x00\x00", "too short"),
], ids=["spdy2", "short-rst"])
def test_malformed_frames_are_protocol_errors(wire, problem):
    with pytest.raises(spdy.ProtocolError, match=problem):
        spdy.Framer().feed(wire)


def _recorded(name: str) -> list[tuple[str, bytes]]:
    with open(os.path.join(TESTDATA, name)) as f:
        return [(r["dir"], base64.b64decode(r["b64"])) for r in map(json.loads, f)]


def test_kubectl_port_forward_frames_recorded():
    """`kubectl port-forward pod/x 18080:80` (1.35, SPDY over its WebSocket tunnel) and one
    connection sending `GET /`, recorded (tests/unit/nodeagent/testdata/README.md): kubectl's
    frames decode, and our replies (encoded by this codec) were accepted, since kubectl sent
    data after them."""
    rx = spdy.Framer()
    frames = [f for d, data in _recorded("kubectl-portforward.jsonl") if d == "in" for f in rx.feed(data)]
    syns = [f for f in frames if isinstance(f, spdy.SynStream)]
    assert [(s.stream_id, dict(s.headers)) for s in syns] == [
        (1, {"streamtype": "error", "port": "80", "requestid": "0"}),
        (3, {"streamtype": "data", "port": "80", "requestid": "0"}),
    ]
    data = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 3)
    assert data.startswith(b"GET / HTTP/1.1\r\n")
