"""tok_corpus.py: a deterministic multilingual test corpus for the tokenizer tests and bench.

Nothing is downloaded: text is generated from Unicode ranges and small word lists written
here, mixed at random with a fixed seed, so every run (and every machine) gets the same bytes.
Each document strings together segments of: English prose (with contractions in upper and lower
case), Japanese, Chinese, Korean, Arabic (with harakat and Arabic-Indic digits), Hindi
(Devanagari with matras and virama), emoji (skin tones, ZWJ families, flags, VS16), source
code (C and Python, tabs and spaces), long runs of spaces/tabs/newlines/CR/NBSP/ideographic
spaces, digits (ASCII, fullwidth, Arabic-Indic, Devanagari), control characters (C0, C1, DEL,
zero-width and BOM), Latin with composed and decomposed accents and compatibility characters
(ligatures, Kelvin sign, Angstrom sign, fullwidth forms, Turkish dotted I), and the tokenizer's
own special-token strings, whole and broken.

    docs = corpus(total_bytes=10_000_000, seed=1234, specials=["<s>", "</s>"])
    strs = random_strings(n=3000, seed=7)   # for the property test
"""
import random
import unicodedata

EN_WORDS = (
    "the of and to in is was for that on with as by it at from his her they this be are not "
    "have had which or one an were all but their there when can who more said what would about "
    "time been into than only other new some could these two may first then do any like my now "
    "over such our man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against go "
    "came right used take three tokenizer model gradient training learning language weights "
    "adapter rank matrix vector Hello World OpenAI Hugging Face Llama Qwen SmolLM "
    "don't can't I'm you're we've they'll she'd it's He's WE'VE THEY'LL I'M DON'T It'S"
).split()
PUNCT = list(".,;:!?") + ["...", " -", " --", "(", ")", "\"", "'", "[", "]", "{", "}", "/", "&"]
JA_PUNCT = ["。", "、", "「", "」", "・", "ー", "！", "？"]
ZH_PUNCT = ["，", "。", "；", "：", "“", "”", "（", "）"]
CODE = [
    "def f(x, y=3):\n    return x ** 2 + y  # square\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n",
    "class Foo:\n    def __init__(self):\n        self.items = [1, 2, 3]\n\n\n",
    "if (x != NULL && x->next) x = x->next; else break;\n",
    "const obj = {a: 1, 'b': [true, false, null], \"c\": `tmpl ${v}`};\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
    "    \t\t  mixed_indent = lambda s: s.strip().lower()\r\n",
    "x<<=2; y>>=1; z = a|b&c^~d; w = p->q.r[0]++;\n",
    "$ ./build/ftune tokenize --model ../models/qwen3 --text 'hi'\n",
]
EMOJI_BASE = [0x1F600, 0x1F602, 0x1F60D, 0x1F914, 0x1F44D, 0x1F44B, 0x1F389, 0x1F680, 0x2764,
              0x1F525, 0x2728, 0x1F4A9, 0x1F9D1, 0x1F469, 0x1F468, 0x1F467, 0x1F466, 0x1F3F3]
SKIN = [0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF]
ZWJ_SEQS = [
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",  # family
    "\U0001F469\U0001F3FD\u200D\U0001F4BB",                       # woman technologist
    "\U0001F3F3\uFE0F\u200D\U0001F308",                           # rainbow flag
    "\U0001F9D1\U0001F3FF\u200D\U0001F91D\u200D\U0001F9D1\U0001F3FB",
    "\u2764\uFE0F\u200D\U0001F525",
    "\U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8",                   # flags JP US
]
SPACES = [" ", " ", " ", "\t", "\n", "\n", "\r\n", "\r", "\u00A0", "\u3000", "\u2009", "\u0085",
          "\u2028", "\u000B", "\u000C", "\u202F", "\u205F", "\u1680"]
CONTROL = [chr(c) for c in list(range(0, 9)) + list(range(14, 32)) + [0x7F] +
           list(range(0x80, 0xA0))] + ["\u200B", "\u200C", "\u200D", "\uFEFF", "\u200E", "\u2060"]
LATIN = ["café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "\u212Bngstro\u0308m",
         "\uFB01nance", "\uFB02ow", "\u212A", "ＦＵＬＬ　ｗｉｄｔｈ", "İstanbul", "ı", "Straße",
         "ΑΒΓ δέλτα", "Ελληνικά", "Привет мир", "ǅemal", "x\u0323\u0307", "ḍ̇", "Ａｂｃ１２３",
         "①②③", "½ ¼", "™ ℃ № ℡", "ﬃ", "Ǆ ǆ", "ᾈ", "ΐ", "ŉ", "\u0345", "Σίσυφος ΣΑΣ"]
DIGIT_SETS = ["0123456789", "０１２３４５６７８９", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "۰۱۲۳۴۵۶۷۸۹"]


def _rng_chars(r, lo, hi, n):
    return "".join(chr(r.randint(lo, hi)) for _ in range(n))


def seg_english(r):
    out = []
    for _ in range(r.randint(5, 60)):
        w = r.choice(EN_WORDS)
        if r.random() < 0.1:
            w = w.capitalize()
        if r.random() < 0.03:
            w = w.upper()
        out.append(w)
        if r.random() < 0.12:
            out[-1] += r.choice(PUNCT)
    return " ".join(out)


def seg_japanese(r):
    s = []
    for _ in range(r.randint(3, 25)):
        k = r.random()
        if k < 0.4:
            s.append(_rng_chars(r, 0x3041, 0x3093, r.randint(1, 6)))  # hiragana
        elif k < 0.6:
            s.append(_rng_chars(r, 0x30A1, 0x30F6, r.randint(1, 6)))  # katakana
        else:
            s.append(_rng_chars(r, 0x4E00, 0x9FA5, r.randint(1, 4)))  # kanji
        if r.random() < 0.25:
            s.append(r.choice(JA_PUNCT))
    return "".join(s)


def seg_chinese(r):
    s = []
    for _ in range(r.randint(3, 30)):
        s.append(_rng_chars(r, 0x4E00, 0x9FA5, r.randint(1, 5)))
        if r.random() < 0.2:
            s.append(r.choice(ZH_PUNCT))
    return "".join(s)


def seg_korean(r):
    return " ".join(_rng_chars(r, 0xAC00, 0xD7A3, r.randint(1, 5))
                    for _ in range(r.randint(2, 20))) + r.choice(["", ".", "?", "!"])


def seg_arabic(r):
    words = []
    for _ in range(r.randint(2, 20)):
        w = ""
        for _ in range(r.randint(2, 7)):
            w += chr(r.randint(0x0621, 0x064A))
            if r.random() < 0.2:
                w += chr(r.randint(0x064B, 0x0652))
        words.append(w)
        if r.random() < 0.1:
            words.append("".join(chr(0x0660 + r.randint(0, 9)) for _ in range(r.randint(1, 4))))
    return " ".join(words) + r.choice(["", "،", "؟", "."])


def seg_hindi(r):
    words = []
    for _ in range(r.randint(2, 20)):
        w = ""
        for _ in range(r.randint(1, 5)):
            w += chr(r.randint(0x0915, 0x0939))
            k = r.random()
            if k < 0.4:
                w += chr(r.randint(0x093E, 0x094C))
            elif k < 0.5:
                w += "\u094D"
            elif k < 0.55:
                w += r.choice(["\u0902", "\u0901", "\u093C"])
        words.append(w)
    return " ".join(words) + r.choice(["", "।", "॥"])


def seg_emoji(r):
    s = []
    for _ in range(r.randint(1, 12)):
        k = r.random()
        if k < 0.4:
            s.append(chr(r.choice(EMOJI_BASE)))
        elif k < 0.6:
            s.append(chr(r.choice(EMOJI_BASE[10:])) + chr(r.choice(SKIN)))
        elif k < 0.85:
            s.append(r.choice(ZWJ_SEQS))
        else:
            s.append(chr(r.choice(EMOJI_BASE)) + "\uFE0F")
        if r.random() < 0.3:
            s.append(" ")
    return "".join(s)


def seg_code(r):
    return "".join(r.choice(CODE) for _ in range(r.randint(1, 4)))


def seg_spaces(r):
    n = r.choice([1, 2, 3, 5, 8, 16, 40, 100, 250])
    if r.random() < 0.5:
        return r.choice(SPACES) * n
    return "".join(r.choice(SPACES) for _ in range(n))


def seg_digits(r):
    k = r.random()
    if k < 0.4:
        return str(r.randint(0, 10 ** r.randint(1, 30)))
    if k < 0.6:
        return f"{r.random() * 10 ** r.randint(0, 9):.{r.randint(0, 6)}f}"
    if k < 0.75:
        return f"{r.randint(0, 10**9):,}"
    ds = r.choice(DIGIT_SETS)
    return "".join(r.choice(ds) for _ in range(r.randint(1, 15)))


def seg_control(r):
    return "".join(r.choice(CONTROL) for _ in range(r.randint(1, 6)))


def seg_latin(r):
    return " ".join(r.choice(LATIN) for _ in range(r.randint(1, 8)))


def make_seg_special(specials):
    pool = list(specials) + ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>",
                             "<|endoftext|>", "<think>", "</think>", "<|begin_of_text|>",
                             "<|eot_id|>", "<|bos|>", "<tool>"]

    def seg(r):
        t = r.choice(pool)
        k = r.random()
        if k < 0.15 and len(t) > 2:  # broken: a prefix of the token
            t = t[: r.randint(1, len(t) - 1)]
        elif k < 0.3:
            t = t + t
        elif k < 0.45:
            t = " " + t + " "
        elif k < 0.55:
            t = "\n" + t + "\n"
        return t

    return seg


SEGS = [(seg_english, 30), (seg_japanese, 8), (seg_chinese, 8), (seg_korean, 6), (seg_arabic, 6),
        (seg_hindi, 6), (seg_emoji, 6), (seg_code, 10), (seg_spaces, 8), (seg_digits, 6),
        (seg_control, 3), (seg_latin, 6)]


def corpus(total_bytes=10_000_000, seed=1234, specials=()):
    """Documents (str) whose UTF-8 sizes add up to at least total_bytes."""
    r = random.Random(seed)
    segs = SEGS + [(make_seg_special(specials), 5)]
    fns = [f for f, _ in segs]
    weights = [w for _, w in segs]
    docs, size = [], 0
    while size < total_bytes:
        target = r.choice([50, 200, 500, 1000, 2000, 4000, 8000])
        parts, n = [], 0
        while n < target:
            p = r.choices(fns, weights)[0](r)
            parts.append(p)
            parts.append(r.choice(["", " ", " ", "\n", "\n\n", ""]))
            n += len(p.encode("utf-8"))
        d = "".join(parts)
        docs.append(d)
        size += len(d.encode("utf-8"))
    return docs


INTERESTING = SPACES + CONTROL + ["\u0301", "\u0308", "\u0323", "\u094D", "\u200D", "\uFE0F",
                                  "'", "'s", "'LL", "\u017F", "\u212A", "İ", "ﬁ", "▁", "Ġ", "Ċ"]


# Characters that tokenizers' normalizers treat as unassigned (its Unicode tables are older):
# the same list as src/tok/unicode_hf.h, measured the way that file says. Mixed into the
# property test.
HF_OLD_UNICODE = [2045, 2200, 2201, 2202, 2203, 2204, 2205, 2206, 2207, 2250, 2251, 2252, 2253, 2254, 2255, 2256, 2257, 2258, 2259, 2558, 3132, 3387, 3388, 3770, 5909, 6847, 6848, 6849, 6850, 6851, 6852, 6853, 6854, 6855, 6856, 6857, 6858, 6859, 6860, 6861, 6862, 7670, 7671, 7672, 7673, 7674, 13055, 42994, 42995, 42996, 43052, 43881, 67457, 67458, 67459, 67460, 67461, 67463, 67464, 67465, 67466, 67467, 67468, 67469, 67470, 67471, 67472, 67473, 67474, 67475, 67476, 67477, 67478, 67479, 67480, 67481, 67482, 67483, 67484, 67485, 67486, 67487, 67488, 67489, 67490, 67491, 67492, 67493, 67494, 67495, 67496, 67497, 67498, 67499, 67500, 67501, 67502, 67503, 67504, 67506, 67507, 67508, 67509, 67510, 67511, 67512, 67513, 67514, 68900, 68901, 68902, 68903, 69291, 69292, 69373, 69374, 69375, 69446, 69447, 69448, 69449, 69450, 69451, 69452, 69453, 69454, 69455, 69456, 69506, 69507, 69508, 69509, 69744, 70459, 70750, 71737, 71738, 71992, 71997, 71998, 72003, 72160, 72244, 72263, 72345, 73026, 73028, 73029, 73111, 73537, 73538, 94192, 94193, 122928, 122929, 122930, 122931, 122932, 122933, 122934, 122935, 122936, 122937, 122938, 122939, 122940, 122941, 122942, 122943, 122944, 122945, 122946, 122947, 122948, 122949, 122950, 122951, 122952, 122953, 122954, 122955, 122956, 122957, 122958, 122959, 122960, 122961, 122962, 122963, 122964, 122965, 122966, 122967, 122968, 122969, 122970, 122971, 122972, 122973, 122974, 122975, 122976, 122977, 122978, 122979, 122980, 122981, 122982, 122983, 122984, 122985, 122986, 122987, 122988, 122989, 123023, 123184, 123185, 123186, 123187, 123188, 123189, 123190, 123566, 123628, 123629, 123630, 123631, 124140, 124141, 124142, 124143, 127340, 130032, 130033, 130034, 130035, 130036, 130037, 130038, 130039, 130040, 130041]


def _assigned(c):
    # Characters assigned in the Unicode version of this Python (3.11: Unicode 14.0), plus
    # private use. Unassigned code points are left out on purpose: `tokenizers` classifies
    # characters with Unicode 16 tables (Rust std, Oniguruma 6.9.10) while PCRE2 10.42 and
    # utf8proc 2.8 use Unicode 15, so a character new in Unicode 16 (e.g. U+13797, Egyptian
    # Hieroglyphs Extended-A) is a letter for one and unassigned for the other.
    return unicodedata.category(chr(c)) not in ("Cn", "Cs")


_OLD_ASSIGNED = [c for c in HF_OLD_UNICODE if _assigned(c)]


def random_strings(n=3000, seed=7):
    """Random Unicode strings for the property test: code points drawn from ASCII, Latin,
    the whole BMP and the supplementary planes (assigned ones, see _assigned), mixed with
    characters that tokenizers treat specially."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        s = []
        for _ in range(r.randint(0, 40)):
            k = r.random()
            if k < 0.3:
                s.append(chr(r.randint(0x20, 0x7E)))
            elif k < 0.42:
                s.append(r.choice(INTERESTING))
            elif k < 0.45:
                s.append(chr(r.choice(_OLD_ASSIGNED)))
            elif k < 0.6:
                s.append(chr(r.randint(0x80, 0x24F)))
            else:
                lo, hi = (0x250, 0xFFFD) if k < 0.9 else (0x10000, 0x10FFFF)
                c = r.randint(lo, hi)
                while not _assigned(c):
                    c = r.randint(lo, hi)
                s.append(chr(c))
        out.append("".join(s))
    return out


if __name__ == "__main__":
    d = corpus(1_000_000)
    print(len(d), sum(len(x.encode()) for x in d))
