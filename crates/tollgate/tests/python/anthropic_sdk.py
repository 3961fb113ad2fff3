"""Drives tollgate's `/v1/messages` with the official `anthropic` SDK, routed
to an OpenAI-compatible provider. Environment: TG_URL, TG_KEY."""
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["TG_URL"], api_key=os.environ["TG_KEY"], max_retries=0)
m = client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
assert m.content[0].type == "text" and m.content[0].text, m
assert m.usage.output_tokens > 0, m.usage

with client.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
assert text.strip(), text
assert final.usage.output_tokens > 0, final.usage

try:
    client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
except anthropic.NotFoundError as err:
    assert err.body["error"]["type"] == "not_found_error", err.body
else:
    raise SystemExit("unknown model must be 404")
print("ok")
