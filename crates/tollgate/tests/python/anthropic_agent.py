"""A Claude Code-style agent loop through tollgate with the official
`anthropic` SDK: `ANTHROPIC_BASE_URL` = the gateway, `ANTHROPIC_AUTH_TOKEN`
= a virtual key. Multi-turn tool use with prompt caching (`cache_control`)
and extended thinking, streamed like Claude Code streams, then the tool
result sent back, then `count_tokens`. Environment: TG_URL, TG_KEY, TG_MODEL."""
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["TG_URL"], auth_token=os.environ["TG_KEY"], max_retries=0)
model = os.environ["TG_MODEL"]
beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
system = [
    {"type": "text", "text": "You are Claude Code, a coding agent."},
    {"type": "text", "text": "<the repository's CLAUDE.md, long>", "cache_control": {"type": "ephemeral"}},
]
tools = [
    {
        "name": "read_file",
        "description": "Read a file of the repository.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        "cache_control": {"type": "ephemeral"},
    }
]
thinking = {"type": "enabled", "budget_tokens": 1024}
messages = [{"role": "user", "content": "Fix the bug in src/main.rs. [[mock:tool_use]]"}]

# Turn 1, streamed: thinking, text, then a tool call.
with client.messages.stream(
    model=model, max_tokens=2048, system=system, tools=tools, thinking=thinking, messages=messages, extra_headers=beta
) as stream:
    kinds = [event.type for event in stream]
    first = stream.get_final_message()
assert kinds[0] == "message_start" and "content_block_delta" in kinds, kinds
blocks = [b.type for b in first.content]
assert blocks[0] == "thinking" and first.content[0].signature, first.content
assert first.stop_reason == "tool_use", first
call = next(b for b in first.content if b.type == "tool_use")
assert call.name == "read_file" and call.input == {"path": "src/main.rs"}, call
assert first.usage.output_tokens > 0, first.usage

# Turn 2: the thinking block goes back with its signature, and the result.
messages.append({"role": "assistant", "content": first.content})
messages.append(
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "fn main() { panic!() }"},
            {"type": "text", "text": "Now fix it.", "cache_control": {"type": "ephemeral"}},
        ],
    }
)
second = client.messages.create(
    model=model, max_tokens=2048, system=system, tools=tools, thinking=thinking, messages=messages, extra_headers=beta
)
assert second.stop_reason == "end_turn", second
assert any(b.type == "text" and b.text for b in second.content), second.content

counted = client.messages.count_tokens(model=model, system=system, tools=tools, messages=messages)
assert counted.input_tokens > 0, counted
print("ok")
