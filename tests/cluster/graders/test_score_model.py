"""The score_model grader through the official openai client against an OpenAI-compatible endpoint on 127.0.0.1.

The endpoint is a small stdlib HTTP server answering /v1/chat/completions with a scripted reply: what is under test
is the grader (templates rendered into the judge's messages, the score parsed and clamped), not a judge model.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster.graders.base import GraderError
from tests.cluster.graders.helpers import grader, score


@pytest.fixture
def judge():
    state = {"reply": "7", "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, self.headers.get("Authorization"), body))
            out = json.dumps({
                "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": state["reply"]}}],
            }).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def judge_grader(url: str, **over):
    return grader(
        type="score_model",
        model="judge-1",
        base_url=url,
        input=[
            {"role": "system", "content": "Grade the answer against {{item.ideal}}."},
            {"role": "user", "content": "Answer: {{sample.output_text}}"},
        ],
        range=[0, 10],
        sampling_params={"temperature": 0, "max_completions_tokens": 5},
        **over,
    )


def test_judge_sees_rendered_templates_and_its_number_is_the_score(judge, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    g = judge_grader(judge["url"])
    assert score(g, "Paris", {"ideal": "Paris"}) == 7.0
    path, auth, body = judge["requests"][0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "judge-1" and body["temperature"] == 0 and body["max_completion_tokens"] == 5
    assert body["messages"][0] == {"role": "system", "content": "Grade the answer against Paris."}
    assert body["messages"][1] == {"role": "user", "content": "Answer: Paris"}
    assert "from 0 to 10" in body["messages"][2]["content"]
    assert g.threshold() == 10.0


def test_scores_are_clamped_to_the_range_and_a_reply_without_a_number_is_named(judge):
    g = judge_grader(judge["url"])
    judge["reply"] = "Score: 15 out of 10"
    assert score(g, "x", {"ideal": "y"}) == 10.0
    judge["reply"] = "excellent"
    with pytest.raises(GraderError, match="the judge replied 'excellent', with no number in it"):
        score(g, "x", {"ideal": "y"})


def test_an_unreachable_judge_is_a_named_grader_error():
    g = judge_grader("http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(GraderError, match="the judge endpoint failed"):
        score(g, "x", {"ideal": "y"})
