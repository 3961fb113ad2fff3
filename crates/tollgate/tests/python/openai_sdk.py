"""Drives tollgate with the official `openai` SDK: non-streaming, streaming
with usage, embeddings, and a budget rejection that must not be retried.
Environment: TG_URL, TG_KEY, TG_BROKE_KEY (a key whose budget is spent)."""
import os
import sys

import openai

url, key = os.environ["TG_URL"], os.environ["TG_KEY"]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=2)

r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
assert r.choices[0].message.content, r
assert r.usage.total_tokens > 0, r.usage

chunks = list(
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text.strip(), chunks
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1]

plain = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True))
assert all(c.usage is None for c in plain), "usage chunk must be stripped when not asked for"

e = client.embeddings.create(model="embed", input="hello")
assert len(e.data[0].embedding) > 0

broke = os.environ.get("TG_BROKE_KEY")
if broke:
    poor = openai.OpenAI(base_url=url + "/v1", api_key=broke, max_retries=5)
    try:
        poor.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
    except openai.APIStatusError as err:
        assert err.status_code == 402, err
        assert err.body["code"] == "budget_exceeded", err.body
    else:
        sys.exit("a spent budget must be rejected")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as err:
    assert err.body["code"] == "model_not_found", err.body
else:
    sys.exit("unknown model must be 404")
print("ok")
