#!/usr/bin/env python3
"""Golden files for tests/unit/test_embed_*.c, produced once by the reference
implementations and committed (run again only when the corpus changes):

  tokenizer.json     ids of the HF `tokenizers` package (the fast BERT
                     tokenizer of all-MiniLM-L6-v2, truncation at 256, no
                     padding) for a corpus of tricky strings
  sentences.json     the sentences of the embedding goldens
  embeddings.f32     their all-MiniLM-L6-v2 vectors from sentence-transformers
                     (little-endian float32, len(sentences) x 384, row-major)

Needs a scratch virtualenv (never the project's own):
  python3 -m venv /tmp/embvenv
  /tmp/embvenv/bin/pip install tokenizers sentence-transformers
  make models
  /tmp/embvenv/bin/python tests/data/embed/make_golden.py [models/all-MiniLM-L6-v2]
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_SEQ = 256

PROSE = (
    "The history of the lighthouse is a history of light and of the people who kept it. "
    "Long before electricity, keepers climbed narrow stairs every evening to trim wicks, "
    "polish lenses and wind the clockwork that turned the great optic. A storm could keep "
    "them awake for days; a broken pane could cost a ship. In 1822 Augustin Fresnel "
    "published his design for a lens built from concentric rings of glass, and within a "
    "generation the beam of a coastal light reached twenty miles out to sea. Keepers "
    "recorded the weather, the passing vessels and the oil they burned, in logbooks that "
    "historians still read today. Some stations stood on bare rock, reachable only when "
    "the tide allowed; supplies came by boat, and families raised children who learned "
    "to read by lamplight. Automation arrived slowly. Radio beacons, then satellite "
    "navigation, made the old lights less essential, and one by one the keepers left. "
    "Many towers now serve as museums, guest houses or nesting sites for seabirds. "
    "Engineers who restore them face familiar problems: salt corrodes iron, wind loosens "
    "mortar, and the original drawings are often lost. Yet the appeal endures. Visitors "
    "climb the same spiral stairs, look out over the same water, and try to imagine a "
    "winter night with the lamp burning and the sea breaking against the rocks below. "
    "Preservation societies collect stories from the last keepers, photograph every "
    "surviving lens, and argue about whether a tower should shine again. Where a light "
    "has been relit, sailors say they are glad to see it, even if their charts and "
    "screens no longer need it. A lighthouse, one old keeper wrote, is a promise made "
    "to strangers: whoever you are, wherever you are going, someone has tried to keep "
    "you safe tonight. The promise is older than any lens, and it will outlast the "
    "towers themselves, carried in the memory of the coasts they guarded so faithfully."
)

TOKENIZER_CORPUS = [
    "",
    "Hello, world!",
    "HELLO World hello WORLD",
    "The quick brown fox jumps over the lazy dog.",
    # accents and case
    "Café résumé naïve façade coöperate Ångström",
    "ÀÉÎÕÜ àéîõü Ççñ Ñandú São Paulo",
    "Straße STRASSE groß Größe",
    "İstanbul ıi Iı",
    "ΣΊΣΥΦΟΣ σίσυφος Ελληνικά",
    "Москва Ёлка ёжик",
    "e\u0301 a\u0300\u0301\u0302 o\u0308\u0304",
    "Ǆ ǅ ǆ ﬁ ﬂ ﬃ",
    "\u212b \u212a \u2126",
    # CJK and other scripts
    "中文分词测试",
    "我爱北京天安门，天安门上太阳升。",
    "日本語のテキストとカタカナ",
    "한국어 텍스트 처리",
    "漢字と中文mixed with English字",
    "\uf900\uf901 \U00020000 \U0002a700 \U0002b820 \U0002b920 \U0002f800",
    "العربية النص مع الحركات: كَتَبَ",
    "עִבְרִית עם ניקוד",
    "हिन्दी पाठ देवनागरी",
    "ภาษาไทยสวัสดีครับ",
    "Ελληνικά; Greek question mark\u037e and ano teleia\u0387",
    # emoji and symbols
    "I love pizza 🍕🍕 and 🐍 python! 👍🏽",
    "👨‍👩‍👧‍👦 family ❤️ heart ✨",
    "price: $100 €50 £30 ¥1000 ₹75 ©2024 ®™",
    "math: x² + y² = z², ½ + ¼ = ¾, ∑∫√∞ ≤ ≥ ≠",
    "arrows → ← ↑ ↓ ⇒ and boxes ■□▲",
    # punctuation runs
    "Wait... what?!?! No way!!!",
    "--- *** ___ ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "\"quoted\" 'single' «guillemets» „German“ 「Japanese」 『brackets』",
    "em—dash en–dash hyphen-ated under_score",
    "foo.bar@example.com https://www.example.org/path?q=1&r=2#frag",
    "C++ int main() { return 0; } // comment /* block */",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
    "§¶†‡•…‰′″‹›",
    # numbers
    "3.14159 2,718,281 1e-10 0x1F 007 +44 (0)20 7946 0000",
    "1st 2nd 3rd 4th 21st 100th",
    # whitespace and control characters
    "tab\tseparated\tvalues\nnew line\r\ncrlf",
    "  leading and trailing spaces   ",
    "non\u00a0breaking\u2003em\u3000ideographic\u2028line\u2029para",
    "zero\u200bwidth\u200cjoiner\u200dchars\ufeffbom",
    "control\x00null\x01soh\x07bell\x1bescape\x7fdel",
    "vt\x0bff\x0cnel\x85end",
    "replacement\ufffdchar and private\ue000use",
    "unassigned\u0378code point",
    "soft\u00adhyphen and word\u2060joiner",
    # special tokens spelled out in text
    "hello [SEP] world [CLS] again [MASK] and [UNK] [PAD]",
    "x[CLS]y [cls] [ SEP ] [SEP",
    # word length limits
    "a" * 100,
    "a" * 101,
    "supercalifragilisticexpialidocious " * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 60 + "," + "y" * 60,
    "é" * 100,
    "é" * 101,
    # wordpiece splits and unknowns
    "unaffable tokenization preprocessing embeddings transformers",
    "ungoogleable hyperparameterization antidisestablishmentarianism",
    "qzxqzxqzx xyzzy plugh",
    "\u2603\u2604\u2605 snowman comet star",
    # long text (truncation at 256 tokens)
    PROSE,
    PROSE.upper(),
    " ".join(["word"] * 300),
    ", ".join(["item"] * 200),
]

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "A cheetah is running behind its prey.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "The new movie is so great.",
    "A man is playing guitar.",
    "I love pasta.",
    "Do you like pizza?",
    "The weather today is sunny with a light breeze.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Eiffel Tower is located in Paris, France.",
    "Python is a popular programming language for data science.",
    "How do I reset my password?",
    "What is the capital of Australia?",
    "The mitochondria is the powerhouse of the cell.",
    "She sells seashells by the seashore.",
    "Machine learning models require large amounts of training data.",
    "The quick brown fox jumps over the lazy dog.",
    "A vector database stores embeddings for similarity search.",
    "Redis is an in-memory data structure store.",
    "Quantum computers use qubits instead of classical bits.",
    "the termination of something by causing so much damage to it that it cannot be repaired",
    "a member of the genus Canis that has been domesticated by man since prehistoric times",
    "move fast by using one's feet, with one foot off the ground at any given time",
    "having or showing knowledge and understanding of the world",
    "dog",
    "run",
    "bank",
    "",
    "!!!",
    "Café au lait and crème brûlée in Montréal.",
    "Straße in München ist sehr schön.",
    "我爱自然语言处理。",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "I love pizza 🍕 and sushi 🍣!",
    "Email me at someone@example.com or visit https://example.org.",
    "Version 2.0.1 was released on 2024-03-15 with 37 bug fixes.",
    "ERROR: connection refused (errno 111) at 10.0.0.1:6379",
    "He said, \"It's not what you think!\"",
    "tab\tand\nnewline characters inside",
    "supercalifragilisticexpialidocious",
    "hello [SEP] world",
    "A" * 150,
    PROSE,
    PROSE[: len(PROSE) // 3],
    " ".join(["embedding"] * 300),
    "The lighthouse keeper climbed the stairs every evening to light the lamp.",
    "Preservation societies restore old lighthouses along the coast.",
    "Satellite navigation made coastal lights less essential for ships.",
    "A recipe for chocolate cake with dark cocoa and butter.",
]


def tokenizer_golden(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_SEQ)  # tokenizer.json bakes in 128
    out = []
    for text in TOKENIZER_CORPUS:
        enc = tok.encode(text)
        out.append({"text": text, "ids": enc.ids})
    with open(os.path.join(HERE, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"max_seq": MAX_SEQ, "cases": out}, f, ensure_ascii=True, indent=0)
        f.write("\n")


def embedding_golden(model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == MAX_SEQ, model.max_seq_length
    vecs = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True,
                        normalize_embeddings=False)
    assert vecs.shape == (len(SENTENCES), 384), vecs.shape
    with open(os.path.join(HERE, "sentences.json"), "w", encoding="utf-8") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "dim": 384, "sentences": SENTENCES}, f,
                  ensure_ascii=True, indent=0)
        f.write("\n")
    with open(os.path.join(HERE, "embeddings.f32"), "wb") as f:
        for row in vecs:
            f.write(struct.pack("<384f", *row.tolist()))


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        HERE, "..", "..", "..", "models", "all-MiniLM-L6-v2")
    tokenizer_golden(model_dir)
    embedding_golden(model_dir)
    print(f"wrote {len(TOKENIZER_CORPUS)} tokenizer cases and {len(SENTENCES)} embeddings "
          f"to {HERE}")


if __name__ == "__main__":
    main()
