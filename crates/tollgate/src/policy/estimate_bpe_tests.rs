//! The compact counter against tiktoken-rs (OpenAI's tiktoken, vendored):
//! the same count for every text of a corpus, in both families. A corpus
//! of ASCII prose, code, unicode of many scripts, emoji sequences,
//! whitespace runs, digits, special-token text, long repeats, and seeded
//! random text mixing all of them.

use super::Bpe;

fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = [
        "",
        " ",
        "tiktoken is great!",
        "Hello, world! How's it going? I'm fine, you're late, they'll see, we've won, she'd go.",
        "DON'T SHOUT. It'S mIxEd CaSe'S",
        "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
        "def f(x):\n\treturn [i**2 for i in range(x) if i % 2 == 0]  # squares\n",
        "{\"role\": \"user\", \"content\": \"What's the weather in Boston?\", \"n\": 12345678}",
        "SELECT team, SUM(cost) FROM ledger WHERE ts >= '2026-01-01' GROUP BY 1;",
        "日本語のテキスト、中文文本和한국어 텍스트 mixed with English.",
        "Ünïcödé wörds: café, naïve, Ångström, ΑΒΓΔ αβγδ, Кириллица, עברית, العربية, हिन्दी, ภาษาไทย",
        "emoji 🤖🚀 and a family 👩‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tones 👍🏽",
        "<|endoftext|> is text here, as are <|fim_prefix|> and <|endofprompt|>",
        "   leading and trailing   ",
        "\n\n\n\t\t  \r\n  \r\r\n ",
        "1234567890 3.14159 1e-9 0x1F 1,000,000",
        "path/to/file.rs:12:5 https://example.com/a/b?c=d&e=f#g",
        "a\u{0301}e\u{0300} combining marks, zero\u{200b}width, bidi \u{202e}txet",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    texts.push("a".repeat(400));
    texts.push("ab ".repeat(700));
    texts.push("hello world ".repeat(300));
    texts.push("🤖".repeat(200));
    texts.push("日本".repeat(300));
    texts.push(" \n".repeat(300));
    texts.push("1234567890".repeat(50));
    texts.push("!@#$%^&*()".repeat(40));
    // Seeded random text over a mix of scripts, digits, punctuation, space.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for len in [1, 2, 5, 10, 50, 100, 1_000, 5_000] {
        for _ in 0..4 {
            let mut s = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = (x >> 8) as u32;
                let c = match x % 9 {
                    0 => char::from_u32(0x20 + r % 0x5f),
                    1 => char::from_u32(0x4e00 + r % 2_000),
                    2 => Some(' '),
                    3 => char::from_u32(0x1f600 + r % 80),
                    4 => char::from_u32(0xc0 + r % 0x180),
                    5 => Some(['\n', '\t', '\r', '\''][(r % 4) as usize]),
                    6 => char::from_u32(0x30 + r % 10),
                    7 => char::from_u32(0x400 + r % 0x100),
                    _ => char::from_u32(0x61 + r % 26),
                };
                s.push(c.unwrap_or('?'));
            }
            texts.push(s);
        }
    }
    texts
}

#[test]
fn counts_equal_tiktoken_on_a_corpus() {
    let families = [
        (
            "cl100k_base",
            Bpe::cl100k().unwrap(),
            tiktoken_rs::cl100k_base().unwrap(),
        ),
        (
            "o200k_base",
            Bpe::o200k().unwrap(),
            tiktoken_rs::o200k_base().unwrap(),
        ),
    ];
    let texts = corpus();
    assert!(texts.len() > 50);
    for (name, ours, reference) in &families {
        let mut total = 0;
        for text in &texts {
            let want = reference.encode_ordinary(text).len() as u64;
            assert_eq!(ours.count(text), Some(want), "{name} on {text:?}");
            total += want;
        }
        assert!(total > 10_000, "{name}: the corpus is {total} tokens");
    }
}

#[test]
fn the_families_differ_where_tiktoken_says_they_do() {
    // A counter that ignored its vocabulary would pass the corpus test only
    // if both families agreed everywhere; on this text they do not.
    let text = "日本語のテキストと中文和한국어";
    let (cl, o2) = (Bpe::cl100k().unwrap(), Bpe::o200k().unwrap());
    assert_eq!(
        cl.count(text),
        Some(
            tiktoken_rs::cl100k_base()
                .unwrap()
                .encode_ordinary(text)
                .len() as u64
        )
    );
    assert_ne!(cl.count(text), o2.count(text));
}
