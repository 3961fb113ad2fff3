"""A Codex-style agent through tollgate with the official `openai` SDK's
Responses API: `client.responses.create`, not streamed and streamed, with
a function tool round trip. Environment: TG_URL, TG_KEY, TG_MODELS (comma
separated: each is driven the same way), TG_PLAIN_MODELS (models that cannot
call tools, such as the built-in mock: driven without the round trip)."""
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["TG_URL"] + "/v1", api_key=os.environ["TG_KEY"], max_retries=0)
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current temperature for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]

tool_models = os.environ["TG_MODELS"].split(",")
plain_models = [m for m in os.environ.get("TG_PLAIN_MODELS", "").split(",") if m]
for model in tool_models + plain_models:
    r = client.responses.create(model=model, instructions="Be brief.", input="Hello", max_output_tokens=64)
    assert r.status == "completed" and r.output_text.strip(), r
    assert r.usage.output_tokens > 0, r.usage
    if model in plain_models:
        continue

    # The tool round trip: the model calls, the agent answers.
    question = [{"role": "user", "content": "Weather in Paris? [[mock:tool_use]]"}]
    r = client.responses.create(model=model, input=question, tools=tools)
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather", r.output
    follow = question + [item.model_dump(exclude_none=True) for item in r.output]
    follow.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"})
    r = client.responses.create(model=model, input=follow, tools=tools)
    assert r.output_text.strip() and not [i for i in r.output if i.type == "function_call"], r.output

for model in tool_models + plain_models:
    kinds, text, final = [], "", None
    for event in client.responses.create(model=model, input="Stream it", stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert text.strip() and final.usage.output_tokens > 0, (text, final)
    print(model, "ok")
print("ok")
