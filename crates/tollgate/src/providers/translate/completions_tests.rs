use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => unreachable!(),
    }
}

#[test]
fn a_prompt_becomes_one_user_message_with_cap_and_stop() {
    let chat = to_chat(&obj(
        json!({"model": "m", "prompt": "Say hi", "max_tokens": 7,
        "stop": ["\n"], "temperature": 0.2, "stream": true, "echo": false, "best_of": 1}),
    ))
    .unwrap();
    assert_eq!(
        Value::Object(chat),
        json!({"model": "m", "max_tokens": 7, "stop": ["\n"], "temperature": 0.2,
            "stream": true, "messages": [{"role": "user", "content": "Say hi"}]})
    );
    let one = to_chat(&obj(json!({"model": "m", "prompt": ["only"]}))).unwrap();
    assert_eq!(one["messages"][0]["content"], "only");
}

#[test]
fn what_cannot_be_one_chat_call_is_refused_clearly() {
    let refused = |body: Value| to_chat(&obj(body)).unwrap_err();
    assert!(refused(json!({"model": "m", "prompt": ["a", "b"]})).contains("list of 2 prompts"));
    assert!(refused(json!({"model": "m", "prompt": [1, 2, 3]})).contains("token ids"));
    assert!(refused(json!({"model": "m", "prompt": 5})).contains("must be a string"));
    assert!(refused(json!({"model": "m", "prompt": "x", "echo": true})).contains("`echo`"));
    assert!(refused(json!({"model": "m", "prompt": "x", "best_of": 3})).contains("`best_of`"));
    assert!(refused(json!({"model": "m", "prompt": "x", "suffix": "y"})).contains("`suffix`"));
}

#[test]
fn chat_answers_and_chunks_become_text_completions() {
    let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "g",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    let out: Value =
        serde_json::from_slice(&from_chat(chat.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"id": "chatcmpl-1", "object": "text_completion", "created": 5, "model": "g",
            "choices": [{"text": "Hello", "index": 0, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    );
    let role_only = json!({"id": "c", "created": 1, "model": "g",
        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]});
    assert!(chunk_from_chat(role_only.to_string().as_bytes()).is_none());
    let text = json!({"id": "c", "created": 1, "model": "g",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]});
    let out: Value =
        serde_json::from_slice(&chunk_from_chat(text.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(out["object"], "text_completion");
    assert_eq!(out["choices"][0]["text"], "Hi");
    let usage = json!({"id": "c", "created": 1, "model": "g", "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    let out: Value =
        serde_json::from_slice(&chunk_from_chat(usage.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(out["choices"], json!([]));
    assert_eq!(out["usage"]["completion_tokens"], 1);
}
