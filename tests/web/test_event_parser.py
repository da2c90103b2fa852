"""The explorer's Server-Sent Events parser (`web/api.js`) in Chromium, fed chunks as a network
may split them: CR, LF and CRLF line ends, and a chunk that ends between CR and LF."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.fractalctl.test_parts import SPLIT_EVENTS, SPLIT_STREAM
from tests.web.conftest import Console

PARSE = """async ([chunks, whole]) => {
  const { parseEvents } = await import("/web/api.js");
  const encoder = new TextEncoder();
  const parse = async (parts) => {
    const body = new ReadableStream({
      start(controller) {
        for (const part of parts) controller.enqueue(encoder.encode(part));
        controller.close();
      },
    });
    const events = [];
    for await (const event of parseEvents(body)) events.push(event);
    return events;
  };
  const splits = [];
  for (let cut = 0; cut <= whole.length; cut++) {
    splits.push(await parse([whole.slice(0, cut), whole.slice(cut)]));
  }
  return { chunks: await parse(chunks), splits };
}"""


def test_the_pages_event_parser_follows_the_standard(page: tuple[Page, Console]) -> None:
    tab, errors = page
    tab.goto("/")  # the explorer: the service's origin, where the module can be imported
    parsed = tab.evaluate(PARSE, [SPLIT_STREAM, "".join(SPLIT_STREAM)])
    expected = [{"data": e.data, "event": e.event, "id": e.id} for e in SPLIT_EVENTS]
    assert parsed["chunks"] == expected
    for cut, events in enumerate(parsed["splits"]):
        assert events == expected, cut
    assert not errors
