"""The live server over HTTP: pages, errors as pages, the steering stream and the strength
sweep, concurrency."""

import concurrent.futures
import json
import re
import urllib.parse

import pytest

from serve_util import get


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_index_lists_every_feature(live):
    server, catalog, _ = live
    status, html = get(server.url + "/")
    assert status == 200
    assert html.count('href="/feature/') == 9  # 3 categories x 3 sites
    for name in ("low", "mid", "high"):
        assert f">{name}</a>" in html
    assert "resid.0" in html and "Traceback" not in html


def test_feature_page_shows_evidence_tokens_and_contexts(live):
    server, _, _ = live
    status, html = get(server.url + "/feature/0")
    assert status == 200
    t = text(html)
    for part in ("Dims and signs", "held-out members vs the vocabulary", "Where the concept lives",
                 "Top tokens by sign agreement", "Held-out members", "Top activating contexts"):
        assert part in t
    assert "<svg" in html and "<mark>" in html  # the layer chart and highlighted contexts
    assert 'class="error"' not in html


def test_dim_page(live):
    server, _, _ = live
    status, html = get(server.url + "/feature/0")
    dim = re.search(r'href="/dim/([^/]+)/(\d+)"', html)
    status, html = get(server.url + f"/dim/{dim.group(1)}/{dim.group(2)}")
    assert status == 200
    t = text(html)
    assert "Features using this dim" in t and "Ranked by" in t
    assert re.search(r"(low|mid|high) wants [+−]", t)


def test_bad_input_is_a_page_not_a_traceback(live):
    server, _, _ = live
    for path, status, words in [
        ("/feature/999", 404, "No feature 999"),
        ("/feature/abc", 400, "not a feature number"),
        ("/dim/resid.0/100000", 404, "outside resid.0"),
        ("/dim/nowhere/1", 404, "not in this catalog"),
        ("/nothing-here", 404, "No such page"),
        ("/steer?feature=nope&strength=1", 400, "No feature named"),
        ("/steer?feature=low&strength=nan", 400, "finite"),
        ("/steer?feature=low&strength=-1", 400, "from 0 to"),
        ("/steer?feature=low&positions=some", 400, "Positions"),
        ("/steer?feature=low&control=concept", 400, "needs a concept name"),
        ("/steer?feature=low&prompt=" + "w5+" * 400, 400, "limit is"),
        ("/reader?text=" + "w5+" * 400, 400, "limit is"),
    ]:
        code, html = get(server.url + path)
        assert code == status, path
        assert words in text(html), (path, text(html)[:400])
        assert "Traceback" not in html and 'File "' not in html


def _events(url: str) -> list[tuple[str, dict]]:
    code, body = get(url)
    assert code == 200
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_steer_stream_baseline_steered_and_control(live):
    server, _, _ = live
    q = urllib.parse.urlencode({"feature": "low", "prompt": "w5 w6 w7", "mode": "away",
                                "strength": "2", "tokens": "6", "control": "random"})
    events = _events(server.url + "/steer/stream?" + q)
    names = [e for e, _ in events]
    assert names[-1] == "done", events
    ends = {d["side"]: d for e, d in events if e == "end"}
    assert set(ends) == {"baseline", "steered", "control"}
    assert all(1 <= d["n_tokens"] <= 6 for d in ends.values())
    streamed = {}
    for e, d in events:
        if e == "token":
            streamed[d["side"]] = streamed.get(d["side"], "") + d["text"]
    assert streamed and all(ends[s]["text"].startswith(t.strip()[:1]) for s, t in streamed.items())
    masses = {d["side"]: d["mass"] for e, d in events if e == "mass"}
    assert set(masses) == {"baseline", "steered", "control"}
    assert all(0 <= m <= 1 for m in masses.values())
    ppl = {d["side"]: d["ppl"] for e, d in events if e == "ppl"}
    assert all(p > 0 for p in ppl.values())


def test_steer_stream_refuses_bad_input(live):
    server, _, _ = live
    events = _events(server.url + "/steer/stream?feature=low&strength=inf")
    assert events == [("fail", {"message": events[0][1]["message"]})]
    assert "finite" in events[0][1]["message"]


def test_prompt_longer_than_the_model_is_refused_in_the_stream(live):
    server, _, _ = live
    q = urllib.parse.urlencode({"feature": "low", "prompt": "w5 " * 60, "tokens": "30"})
    events = _events(server.url + "/steer/stream?" + q)
    assert events[-1][0] == "fail" and "positions" in events[-1][1]["message"]


def test_fifty_concurrent_page_requests(live):
    server, _, _ = live
    paths = ["/", "/feature/1", "/feature/4", "/dim/resid.1/3", "/steer", "/reader"] * 9 + ["/"] * 6
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda p: get(server.url + p)[0], paths))
    assert results == [200] * len(paths)
    assert get(server.url + "/")[0] == 200  # still up


# -- strength sweep -------------------------------------------------------------------------------
def test_sweep_streams_one_row_per_strength_then_the_verdict(live):
    server, _, _ = live
    q = urllib.parse.urlencode({"feature": "low", "prompt": "w5 w6 w7", "mode": "away",
                                "strengths": "4, 0.5 1", "control": "concept"})  # control ignored
    events = _events(server.url + "/steer/sweep?" + q)
    assert events[-1][0] == "done", events
    rows = [d for e, d in events if e == "row"]
    assert [r["strength"] for r in rows] == [None, 0.5, 1.0, 4.0]  # baseline, then ascending
    assert rows[0]["ratio"] == 1.0 and rows[0]["degraded"] is False
    for r in rows:
        assert r["ppl"] > 1 and 0 <= r["mass"] <= 1 and 1 <= r["n_tokens"] <= 16
        assert r["ratio"] == pytest.approx(r["ppl"] / rows[0]["ppl"])
        assert r["chart"].startswith("<svg") and "perplexity" in r["chart"]
    assert rows[-1]["chart"].count("strength 4") == 1  # the last chart holds every row
    done = events[-1][1]
    first = next((r["strength"] for r in rows[1:] if r["ppl"] > 2 * rows[0]["ppl"]), None)
    assert done["degrades_at"] == first
    want = (f"Text degrades from strength {first:g}" if first is not None else
            "No degradation up to strength 4")
    assert done["verdict"].startswith(want) and done["message"] == "Done: " + done["verdict"]


def test_sweep_page_embeds_the_stream_and_refuses_bad_strengths(live):
    server, _, _ = live
    code, html = get(server.url + "/steer?" + urllib.parse.urlencode(
        {"feature": "low", "prompt": "w5", "action": "sweep", "strengths": "1,2"}))
    assert code == 200 and 'data-stream="/steer/sweep?' in html and 'id="sweep-table"' in html
    assert 'id="steer-out"' not in html
    for strengths, words in [("1,2,3,4,5,6,7,8,9", "at most 8"), ("1,x", "must be a number"),
                             ("1,inf", "finite"), ("-1", "from 0 to"), ("200", "from 0 to"),
                             ("2,2", "repeat")]:
        q = urllib.parse.urlencode({"feature": "low", "prompt": "w5", "action": "sweep",
                                    "strengths": strengths})
        code, html = get(server.url + "/steer?" + q)
        assert code == 400 and words in text(html), (strengths, text(html)[:300])
        assert "Traceback" not in html
        events = _events(server.url + "/steer/sweep?" + q)
        assert [e for e, _ in events] == ["fail"] and words in events[0][1]["message"]
    code, html = get(server.url + "/steer?feature=low&action=dance")
    assert code == 400 and "dance" in html and "is not one of generate, sweep" in text(html)


def test_sweep_waits_for_the_model_lock(live):
    """One job at a time per model: a sweep queues behind whoever holds the lock."""
    import threading

    server, _, _ = live
    lock = server.app.state.model_lock
    got = {}
    q = urllib.parse.urlencode({"feature": "low", "prompt": "w5 w6", "strengths": "1"})
    lock.acquire()
    try:
        t = threading.Thread(target=lambda: got.update(ev=_events(server.url + "/steer/sweep?" + q)))
        t.start()
        t.join(1.5)
        assert t.is_alive()  # still waiting: the model is busy
    finally:
        lock.release()
    t.join(60)
    names = [e for e, _ in got["ev"]]
    assert names[0] == "status" and "Waiting" in got["ev"][0][1]["message"]
    assert names.count("row") == 2 and names[-1] == "done"
