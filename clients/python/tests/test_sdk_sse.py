"""The SSE decoder and stream-event parsing: no sockets, bytes in whatever pieces the network delivers them."""

from __future__ import annotations

import json

import pytest
from llmengine._core.responses import parse_stream_event
from llmengine._core.sse import SSEDecoder
from llmengine.errors import MalformedResponseError

EVENT_1 = {"request_id": "r1", "output": {"text": " héllo", "finished": False}, "error": None}
EVENT_2 = {
    "request_id": "r1",
    "output": {"text": " wörld", "finished": True, "num_prompt_tokens": 3, "num_completion_tokens": 2},
    "error": None,
}
ERROR_EVENT = {
    "request_id": "r1",
    "output": None,
    "error": {"status_code": 500, "content": {"error": "upstream died", "timestamp": "2026-11-22T02:30:00Z"}},
}


def wire(*events: dict[str, object], newline: str = "\n") -> bytes:
    text = ": ping" + newline + newline  # keep-alive comment before anything else
    for event in events:
        text += "data: " + json.dumps(event, ensure_ascii=False) + newline + newline
    return text.encode()


def decode_in_pieces(data: bytes, size: int) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for start in range(0, len(data), size):
        events += decoder.feed(data[start : start + size])
    return events + decoder.flush()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 10_000])
def test_events_survive_any_split_of_the_byte_stream(newline: str, size: int) -> None:
    # size 1 splits every multi-byte UTF-8 character and every "\r\n" pair.
    data = wire(EVENT_1, EVENT_2, newline=newline)
    events = [json.loads(e) for e in decode_in_pieces(data, size)]
    assert events == [EVENT_1, EVENT_2]


def test_lines_that_are_not_data_fields_are_skipped() -> None:
    data = b': ping\n\nevent: completion\nid: 7\nretry: 100\ndata: {"a": 1}\n\n: ping\n\n'
    assert decode_in_pieces(data, 5) == ['{"a": 1}']


def test_data_without_the_space_after_the_colon_is_read_too() -> None:
    assert decode_in_pieces(b'data:{"a":1}\n\n', 100) == ['{"a":1}']


def test_an_event_spread_over_several_data_lines_is_joined_with_newlines() -> None:
    assert decode_in_pieces(b"data: first\ndata: second\n\n", 4) == ["first\nsecond"]


def test_the_last_event_counts_even_without_the_closing_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: {"b": 2}') == ['{"a": 1}']
    assert decoder.flush() == ['{"b": 2}']


def test_an_event_is_only_handed_out_once_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n') == []
    assert decoder.feed(b"\n") == ['{"a": 1}']


def test_a_carriage_return_at_a_chunk_end_is_not_mistaken_for_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == ["x"]


def test_stream_events_parse_into_responses() -> None:
    first, last = (parse_stream_event(e) for e in decode_in_pieces(wire(EVENT_1, EVENT_2), 3))
    assert first.output is not None and first.output.text == " héllo" and not first.output.finished
    assert last.output is not None and last.output.finished
    assert (last.output.num_prompt_tokens, last.output.num_completion_tokens) == (3, 2)
    assert last.error is None
    assert json.loads(last.json()) == {
        "request_id": "r1",
        "output": {
            "text": " wörld",
            "finished": True,
            "num_prompt_tokens": 3,
            "num_completion_tokens": 2,
            "token": None,
        },
        "error": None,
    }


def test_the_in_band_error_event_arrives_as_a_response_with_error_set() -> None:
    (event,) = (parse_stream_event(e) for e in decode_in_pieces(wire(ERROR_EVENT), 4))
    assert event.output is None
    assert event.error is not None
    assert event.error.status_code == 500
    assert event.error.content.error == "upstream died"
    assert event.request_id == "r1"


def test_a_stream_event_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(MalformedResponseError, match="invalid stream event"):
        parse_stream_event("[DONE]")
