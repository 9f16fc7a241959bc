//! S-expressions as libgcrypt (and therefore Guix) reads and writes them.
//!
//! Guix keeps keys and signatures in libgcrypt's s-expressions. Two spellings matter:
//!
//! - the **advanced** (human-readable) form, which `gcry_sexp_sprint(GCRYSEXP_FMT_ADVANCED)`
//!   writes: Guix's key files and the base64 payload of a narinfo `Signature:` are exactly that
//!   text. For example `signing-key.pub` from `tests/vectors/guix/` is, as a Rust string,
//!
//!   ```text
//!   "(public-key \n (ecc \n  (curve Ed25519)\n  (q #3B0971B36AFEE3136EBA35A4CE59C0F312BF98DF76700AA30C01A7667A55CCB5#)\n  )\n )\n"
//!   ```
//!
//!   (note the space after `public-key` and `ecc`: an atom followed by a list keeps its
//!   separator, and the line break goes before the opening parenthesis);
//! - the **canonical** form, `(10:public-key(3:ecc(5:curve7:Ed25519)(1:q32:...)))`: every atom
//!   is `<length>:<bytes>`, no whitespace. It is the unambiguous form for hashing and storage.
//!
//! [`Sexp::parse`] reads either form (like `gcry_sexp_new` with auto-detection): tokens
//! (`curve`), `"quoted strings"` with C-style escapes, `#HEX#`, `|base64|`, verbatim `3:foo`,
//! and the length-checked `3"foo"` / `3#666F6F#` / `3|Zm9v|`. Display hints (`[...]`) are not
//! supported: neither Guix nor libgcrypt's key material uses them.
//!
//! [`Sexp::to_advanced`] reproduces libgcrypt's layout byte for byte, including its choice of
//! spelling for each atom (token, quoted string, or uppercase hex), so a re-emitted key file or
//! signature is identical to what `guix archive --generate-key` / `guix publish` write.
//!
//! Hostile input cannot exhaust the stack or memory: nesting is limited to [`MAX_DEPTH`] and
//! input to [`MAX_INPUT_LEN`] bytes; every length prefix is checked against the bytes left.

use base64::Engine as _;
use thiserror::Error;

/// Deepest nesting [`Sexp::parse`] accepts. Guix's deepest structure (a signature) has depth 4;
/// an ACL has 5.
pub const MAX_DEPTH: usize = 64;

/// Largest input [`Sexp::parse`] accepts, in bytes. Generous for an ACL of hundreds of keys.
pub const MAX_INPUT_LEN: usize = 1 << 20;

/// Characters allowed in a token (after the first, which must not be a digit), as libgcrypt
/// defines them.
const TOKEN_PUNCTUATION: &[u8] = b"-./_:*+=";

/// Why some bytes are not an s-expression.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SexpError {
    /// Nothing but whitespace.
    #[error("empty s-expression")]
    Empty,
    /// Input larger than [`MAX_INPUT_LEN`].
    #[error("s-expression too large: {len} bytes (limit {max})")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("s-expression nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input ended inside a list or an atom.
    #[error("s-expression truncated: input ended inside {inside}")]
    Truncated {
        /// What was open when the input ended.
        inside: &'static str,
    },
    /// A byte that cannot start or continue anything here.
    #[error("unexpected byte {byte:#04x} at offset {offset} in s-expression")]
    UnexpectedByte {
        /// The byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// The top level is an atom, not a list.
    #[error("s-expression must be a list, found an atom")]
    NotAList,
    /// Something follows the complete s-expression.
    #[error("trailing data at offset {offset} after the s-expression")]
    TrailingData {
        /// Where it starts.
        offset: usize,
    },
    /// A `<length>:` prefix that is malformed, too large, or longer than the input left.
    #[error("invalid length prefix at offset {offset}")]
    BadLength {
        /// Where the prefix starts.
        offset: usize,
    },
    /// A length-prefixed `"..."`, `#...#` or `|...|` whose decoded size differs from its prefix.
    #[error("length prefix at offset {offset} says {declared} bytes, atom has {actual}")]
    LengthMismatch {
        /// Where the prefix starts.
        offset: usize,
        /// The prefix.
        declared: usize,
        /// The decoded atom length.
        actual: usize,
    },
    /// A `#...#` atom with a non-hex character or an odd number of digits.
    #[error("invalid hex atom at offset {offset}")]
    BadHex {
        /// Where the atom starts.
        offset: usize,
    },
    /// A `|...|` atom that is not valid base64.
    #[error("invalid base64 atom at offset {offset}")]
    BadBase64 {
        /// Where the atom starts.
        offset: usize,
    },
    /// A backslash escape the quoted-string syntax does not define.
    #[error("invalid escape in quoted string at offset {offset}")]
    BadEscape {
        /// Where the backslash is.
        offset: usize,
    },
    /// Text holding a character that is not one byte in ISO-8859-1 (see [`Sexp::parse_text`]).
    #[error("character {character:?} at position {offset} is not ISO-8859-1")]
    NotLatin1 {
        /// The character.
        character: char,
        /// Its position, in characters.
        offset: usize,
    },
    /// A `[display hint]`.
    #[error("display hints are not supported (offset {offset})")]
    DisplayHint {
        /// Where the `[` is.
        offset: usize,
    },
}

/// One s-expression: an octet-string atom or a list.
///
/// libgcrypt does not distinguish tokens, strings and binary data: all are octet strings, and
/// only the printer chooses a spelling. This type does the same.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Sexp {
    /// An octet string (a token such as `ecc`, text, or binary data such as a key).
    Atom(Vec<u8>),
    /// A list of s-expressions; by convention its first element is an atom naming it.
    List(Vec<Sexp>),
}

impl std::fmt::Debug for Sexp {
    /// Debug-prints the advanced form: far easier to read than nested enums.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.to_advanced();
        write!(
            f,
            "Sexp({:?})",
            String::from_utf8_lossy(text.trim_ascii_end())
        )
    }
}

impl Sexp {
    /// An atom holding `bytes`.
    pub fn atom(bytes: impl Into<Vec<u8>>) -> Sexp {
        Sexp::Atom(bytes.into())
    }

    /// A list of `items`.
    pub fn list(items: impl Into<Vec<Sexp>>) -> Sexp {
        Sexp::List(items.into())
    }

    /// Parses one s-expression (a list) in the advanced or canonical form; only whitespace may
    /// follow it.
    pub fn parse(input: &[u8]) -> Result<Sexp, SexpError> {
        if input.len() > MAX_INPUT_LEN {
            return Err(SexpError::TooLarge {
                len: input.len(),
                max: MAX_INPUT_LEN,
            });
        }
        let mut parser = Parser { input, pos: 0 };
        parser.skip_whitespace();
        if parser.pos == input.len() {
            return Err(SexpError::Empty);
        }
        if parser.peek() != Some(b'(') {
            // A bare atom is not a valid libgcrypt s-expression; say so rather than "byte".
            return match parser.atom() {
                Ok(_) => Err(SexpError::NotAList),
                Err(e) => Err(e),
            };
        }
        let sexp = parser.value(0)?;
        parser.skip_whitespace();
        if parser.pos != input.len() {
            return Err(SexpError::TrailingData { offset: parser.pos });
        }
        Ok(sexp)
    }

    /// Parses text the way Guix does (`string->canonical-sexp`): each character is one byte
    /// (ISO-8859-1), so a character above U+00FF is an error.
    pub fn parse_text(text: &str) -> Result<Sexp, SexpError> {
        let mut bytes = Vec::with_capacity(text.len());
        for (offset, c) in text.chars().enumerate() {
            let byte = u8::try_from(u32::from(c)).map_err(|_| SexpError::NotLatin1 {
                character: c,
                offset,
            })?;
            bytes.push(byte);
        }
        Sexp::parse(&bytes)
    }

    /// [`Sexp::to_advanced`] as text the way Guix holds it (`canonical-sexp->string`): each byte
    /// one ISO-8859-1 character. Written out as UTF-8, this is exactly what Guix writes to key
    /// files and base64-encodes into narinfo signatures.
    pub fn to_advanced_text(&self) -> String {
        self.to_advanced().into_iter().map(char::from).collect()
    }

    /// The atom's bytes, if this is an atom.
    pub fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Sexp::Atom(bytes) => Some(bytes),
            Sexp::List(_) => None,
        }
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<&[Sexp]> {
        match self {
            Sexp::Atom(_) => None,
            Sexp::List(items) => Some(items),
        }
    }

    /// The name of a list: its first element, when that is an atom.
    pub fn head(&self) -> Option<&[u8]> {
        self.as_list()?.first()?.as_atom()
    }

    /// The first list, in textual (depth-first) order and including `self`, whose name is
    /// `token`: what `gcry_sexp_find_token` (Guix's `find-sexp-token`) returns.
    pub fn find_token(&self, token: &str) -> Option<&Sexp> {
        if self.head() == Some(token.as_bytes()) {
            return Some(self);
        }
        self.as_list()?
            .iter()
            .find_map(|item| item.find_token(token))
    }

    /// The canonical form: `(` … `)` around `<decimal length>:<bytes>` atoms, no whitespace.
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Sexp::Atom(bytes) => {
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(bytes);
            }
            Sexp::List(items) => {
                out.push(b'(');
                for item in items {
                    item.write_canonical(out);
                }
                out.push(b')');
            }
        }
    }

    /// The advanced form exactly as libgcrypt's `gcry_sexp_sprint(GCRYSEXP_FMT_ADVANCED)`
    /// writes it, final newline included.
    ///
    /// Bytes, not a `String`: a quoted-string atom may carry raw bytes 0xA1..=0xFF, which
    /// libgcrypt prints unescaped (Guix then treats the text as ISO-8859-1).
    ///
    /// Layout: a list opened below the top level starts on a new line indented one space per
    /// level; atoms are separated from whatever follows by one space, except before `)`; after
    /// a `)` comes a newline and the enclosing level's indentation unless `(` or the end follows.
    pub fn to_advanced(&self) -> Vec<u8> {
        let mut printer = AdvancedPrinter {
            out: Vec::new(),
            indent: 0,
        };
        printer.value(self);
        printer.out.push(b'\n');
        printer.out
    }
}

/// State of the advanced-form printer: libgcrypt's layout is defined by a running indentation
/// and by what comes next after each atom or `)`.
struct AdvancedPrinter {
    out: Vec<u8>,
    indent: usize,
}

/// What follows an item in the advanced layout decides its separator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Atom,
    Open,
    Close,
    End,
}

impl AdvancedPrinter {
    fn value(&mut self, sexp: &Sexp) {
        // The top level is followed by the end; nested items get their `Next` from `list`.
        match sexp {
            Sexp::Atom(bytes) => self.atom(bytes, Next::End),
            Sexp::List(items) => self.list(items, Next::End),
        }
    }

    fn list(&mut self, items: &[Sexp], next: Next) {
        if self.indent > 0 {
            self.out.push(b'\n');
            self.push_indent();
        }
        self.out.push(b'(');
        self.indent += 1;
        for (i, item) in items.iter().enumerate() {
            let after = match items.get(i + 1) {
                Some(Sexp::Atom(_)) => Next::Atom,
                Some(Sexp::List(_)) => Next::Open,
                None => Next::Close,
            };
            match item {
                Sexp::Atom(bytes) => self.atom(bytes, after),
                Sexp::List(inner) => self.list(inner, after),
            }
        }
        self.out.push(b')');
        self.indent -= 1;
        if next != Next::Open && next != Next::End {
            self.out.push(b'\n');
            self.push_indent();
        }
    }

    fn atom(&mut self, bytes: &[u8], next: Next) {
        match atom_spelling(bytes) {
            Spelling::Token => self.out.extend_from_slice(bytes),
            Spelling::Quoted => write_quoted(bytes, &mut self.out),
            Spelling::Hex => {
                self.out.push(b'#');
                self.out.extend_from_slice(hex_upper(bytes).as_bytes());
                self.out.push(b'#');
            }
        }
        if next != Next::Close && next != Next::End {
            self.out.push(b' ');
        }
    }

    fn push_indent(&mut self) {
        self.out.extend(std::iter::repeat_n(b' ', self.indent));
    }
}

/// How libgcrypt chooses to print an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Token,
    Quoted,
    Hex,
}

/// Control characters that a quoted string can carry as a backslash escape.
fn has_escape(byte: u8) -> bool {
    matches!(byte, 0x08 | b'\t' | 0x0b | b'\n' | 0x0c | b'\r')
}

/// Bytes libgcrypt treats as control characters when printing.
fn is_control(byte: u8) -> bool {
    byte < 0x20 || (0x7f..=0xa0).contains(&byte)
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(&byte)
}

/// libgcrypt's rule: empty → `""`; a leading byte with the high bit set or zero, or a control
/// byte (below 0x20, or 0x7F..=0xA0) other than NUL that has no backslash escape → hex; all
/// token characters and not starting with a digit → token; otherwise a quoted string.
///
/// A NUL after the first byte counts both as escapable and as a token character: libgcrypt
/// looks bytes up in its character lists with `strchr`, which also finds the list's own
/// terminating NUL. So `e\0` prints as a raw token and `e \0` as `"e \x00"`.
fn atom_spelling(bytes: &[u8]) -> Spelling {
    let Some(&first) = bytes.first() else {
        return Spelling::Quoted;
    };
    if first & 0x80 != 0 || first == 0 {
        return Spelling::Hex;
    }
    let binary = |b: u8| is_control(b) && !has_escape(b) && b != 0;
    if bytes.iter().any(|&b| binary(b)) {
        return Spelling::Hex;
    }
    if !first.is_ascii_digit() && bytes.iter().all(|&b| is_token_byte(b) || b == 0) {
        return Spelling::Token;
    }
    Spelling::Quoted
}

fn write_quoted(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        let escaped = match b {
            0x08 => Some(b'b'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            b'\n' => Some(b'n'),
            0x0c => Some(b'f'),
            b'\r' => Some(b'r'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        match escaped {
            Some(letter) => out.extend_from_slice(&[b'\\', letter]),
            // Only a NUL gets here (other control bytes make the atom hex): `\x00`.
            None if is_control(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            None => out.push(b),
        }
    }
    out.push(b'"');
}

/// Uppercase hex, the spelling libgcrypt and Guix use for binary atoms and key identities.
pub fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Recursive-descent reader over the whole input; recursion depth is bounded by [`MAX_DEPTH`].
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> SexpError {
        match self.peek() {
            Some(byte) => SexpError::UnexpectedByte {
                byte,
                offset: self.pos,
            },
            None => SexpError::Truncated { inside: "a list" },
        }
    }

    /// A list or an atom; `depth` is the number of lists already open.
    fn value(&mut self, depth: usize) -> Result<Sexp, SexpError> {
        if self.peek() != Some(b'(') {
            return self.atom().map(Sexp::Atom);
        }
        if depth >= MAX_DEPTH {
            return Err(SexpError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => return Err(SexpError::Truncated { inside: "a list" }),
                Some(b')') => {
                    self.pos += 1;
                    return Ok(Sexp::List(items));
                }
                Some(_) => items.push(self.value(depth + 1)?),
            }
        }
    }

    fn atom(&mut self) -> Result<Vec<u8>, SexpError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'#') => self.hex(),
            Some(b'|') => self.base64(),
            Some(b'[') => Err(SexpError::DisplayHint { offset: start }),
            Some(b) if b.is_ascii_digit() => self.length_prefixed(),
            Some(b) if is_token_byte(b) => {
                while self.peek().is_some_and(is_token_byte) {
                    self.pos += 1;
                }
                Ok(self.input[start..self.pos].to_vec())
            }
            _ => Err(self.unexpected()),
        }
    }

    /// `<decimal>` followed by `:` (verbatim bytes) or by a quoted, hex or base64 atom whose
    /// decoded length must equal the prefix.
    fn length_prefixed(&mut self) -> Result<Vec<u8>, SexpError> {
        let start = self.pos;
        // libgcrypt refuses `03:abc`; only a lone `0` may start with zero.
        if self.peek() == Some(b'0') && self.input.get(start + 1).is_some_and(u8::is_ascii_digit) {
            return Err(SexpError::BadLength { offset: start });
        }
        let mut declared: usize = 0;
        while let Some(digit) = self.peek().filter(u8::is_ascii_digit) {
            declared = declared
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(digit - b'0')))
                .ok_or(SexpError::BadLength { offset: start })?;
            self.pos += 1;
        }
        let decoded = match self.peek() {
            Some(b':') => {
                self.pos += 1;
                let end = self
                    .pos
                    .checked_add(declared)
                    .filter(|&end| end <= self.input.len())
                    .ok_or(SexpError::BadLength { offset: start })?;
                let bytes = self.input[self.pos..end].to_vec();
                self.pos = end;
                return Ok(bytes);
            }
            Some(b'"') => self.quoted()?,
            Some(b'#') => self.hex()?,
            Some(b'|') => self.base64()?,
            None => return Err(SexpError::Truncated { inside: "an atom" }),
            Some(_) => return Err(SexpError::BadLength { offset: start }),
        };
        if decoded.len() != declared {
            return Err(SexpError::LengthMismatch {
                offset: start,
                declared,
                actual: decoded.len(),
            });
        }
        Ok(decoded)
    }

    /// The bytes up to the closing `delimiter` (exclusive); `pos` moves past it.
    fn delimited(&mut self, delimiter: u8, inside: &'static str) -> Result<&[u8], SexpError> {
        let body_start = self.pos + 1;
        let rest = self.input.get(body_start..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == delimiter)
            .ok_or(SexpError::Truncated { inside })?;
        self.pos = body_start + len + 1;
        Ok(&rest[..len])
    }

    fn hex(&mut self) -> Result<Vec<u8>, SexpError> {
        let offset = self.pos;
        let body = self.delimited(b'#', "a hex atom")?;
        let mut nibbles = Vec::with_capacity(body.len());
        for &b in body.iter().filter(|&&b| !is_whitespace(b)) {
            nibbles.push(hex_value(b).ok_or(SexpError::BadHex { offset })?);
        }
        if nibbles.len() % 2 != 0 {
            return Err(SexpError::BadHex { offset });
        }
        Ok(nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
    }

    /// `|base64|`: like libgcrypt, padding is optional, whitespace and emptiness are not allowed.
    fn base64(&mut self) -> Result<Vec<u8>, SexpError> {
        const LENIENT_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let offset = self.pos;
        let body = self.delimited(b'|', "a base64 atom")?;
        if body.is_empty() {
            return Err(SexpError::BadBase64 { offset });
        }
        LENIENT_PADDING
            .decode(body)
            .map_err(|_| SexpError::BadBase64 { offset })
    }

    fn quoted(&mut self) -> Result<Vec<u8>, SexpError> {
        self.pos += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(SexpError::Truncated {
                    inside: "a quoted string",
                });
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => self.escape(&mut out)?,
                _ => out.push(b),
            }
        }
    }

    /// After a backslash: one-letter escapes, `\ooo` octal, `\xHH`, or a line continuation.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), SexpError> {
        let offset = self.pos - 1;
        let bad = SexpError::BadEscape { offset };
        let Some(letter) = self.peek() else {
            return Err(SexpError::Truncated {
                inside: "a quoted string",
            });
        };
        self.pos += 1;
        let simple = match letter {
            b'b' => Some(0x08),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'n' => Some(b'\n'),
            b'f' => Some(0x0c),
            b'r' => Some(b'\r'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        match letter {
            b'0'..=b'7' => {
                let digits = self.take(2).ok_or(bad.clone())?;
                let mut value = u32::from(letter - b'0');
                for &d in digits {
                    if !(b'0'..=b'7').contains(&d) {
                        return Err(bad);
                    }
                    value = value * 8 + u32::from(d - b'0');
                }
                out.push(u8::try_from(value).map_err(|_| bad)?);
            }
            b'x' => {
                let digits = self.take(2).ok_or(bad.clone())?;
                let high = hex_value(digits[0]).ok_or(bad.clone())?;
                let low = hex_value(digits[1]).ok_or(bad)?;
                out.push((high << 4) | low);
            }
            // Line continuation: the backslash and the line break vanish.
            b'\n' => {
                if self.peek() == Some(b'\r') {
                    self.pos += 1;
                }
            }
            b'\r' => {
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
            }
            _ => return Err(bad),
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.input.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/guix");

    fn vector(name: &str) -> Vec<u8> {
        std::fs::read(format!("{VECTORS}/{name}")).expect("test vector is readable")
    }

    fn signature_payload(narinfo: &str) -> Vec<u8> {
        let text = String::from_utf8(vector(narinfo)).expect("vector is UTF-8");
        let line = text
            .lines()
            .find(|l| l.starts_with("Signature: "))
            .expect("vector has a Signature line");
        let b64 = line.rsplit(';').next().expect("three fields");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("payload is base64")
    }

    fn tok(s: &str) -> Sexp {
        Sexp::atom(s)
    }

    #[test]
    fn reemitting_real_signature_payloads_is_byte_identical() {
        for name in [
            "bordeaux-hello-2.12.2.narinfo",
            "generated.narinfo",
            "generated-short-r.narinfo",
        ] {
            let payload = signature_payload(name);
            let sexp = Sexp::parse(&payload).expect("payload parses");
            assert_eq!(
                String::from_utf8_lossy(&sexp.to_advanced()),
                String::from_utf8_lossy(&payload),
                "{name}"
            );
        }
    }

    #[test]
    fn reemitting_libgcrypt_written_key_files_is_byte_identical() {
        for name in ["signing-key.pub", "signing-key.sec", "acl.example"] {
            let text = vector(name);
            let sexp = Sexp::parse(&text).expect("key file parses");
            assert_eq!(sexp.to_advanced(), text, "{name}");
        }
    }

    #[test]
    fn key_file_without_trailing_spaces_parses_to_the_same_tree() {
        let bordeaux = Sexp::parse(&vector("bordeaux.guix.gnu.org.pub")).expect("parses");
        let acl = Sexp::parse(&vector("acl.example")).expect("parses");
        let first_entry_key = acl.find_token("public-key").expect("acl has a key");
        assert_eq!(&bordeaux, first_entry_key);
    }

    #[test]
    fn canonical_and_advanced_forms_parse_to_the_same_tree() {
        let advanced = Sexp::parse(&vector("signing-key.sec")).expect("parses");
        let canonical = advanced.to_canonical();
        assert!(canonical.starts_with(b"(11:private-key(3:ecc(5:curve7:Ed25519)(1:q32:"));
        assert_eq!(Sexp::parse(&canonical).expect("canonical parses"), advanced);
    }

    #[test]
    fn every_atom_spelling_parses() {
        let text = br#"(a tok-en./_:*+= "q \"x\" \n\t\101\x42 \
end" #0A 0b# |Zm9v| 3:a b 2"hi" 2#6869# 3|Zm9v| "")"#;
        let sexp = Sexp::parse(text).expect("parses");
        let expected = Sexp::list(vec![
            tok("a"),
            tok("tok-en./_:*+="),
            Sexp::atom(&b"q \"x\" \n\tAB end"[..]),
            Sexp::atom(vec![0x0a, 0x0b]),
            tok("foo"),
            tok("a b"),
            tok("hi"),
            tok("hi"),
            tok("foo"),
            tok(""),
        ]);
        assert_eq!(sexp, expected);
    }

    #[test]
    fn advanced_layout_matches_libgcrypt_for_nesting_shapes() {
        // Layouts observed from gcry_sexp_sprint (libgcrypt 1.10).
        let cases: [(&str, &str); 5] = [
            ("(a (b) c)", "(a \n (b)\n c)\n"),
            ("()", "()\n"),
            ("((a))", "(\n (a)\n )\n"),
            (
                "(a (b (c d) e) (f))",
                "(a \n (b \n  (c d)\n  e)\n (f)\n )\n",
            ),
            ("(a (b))", "(a \n (b)\n )\n"),
        ];
        for (input, expected) in cases {
            let sexp = Sexp::parse(input.as_bytes()).expect("parses");
            assert_eq!(String::from_utf8_lossy(&sexp.to_advanced()), expected);
        }
    }

    #[test]
    fn atoms_are_spelled_as_libgcrypt_chooses() {
        let cases: [(&[u8], &str); 13] = [
            (b"", "\"\""),
            (b"x y", "\"x y\""),
            (b"123", "\"123\""),
            (b"x=y", "x=y"),
            (b"it's\t", "\"it\\'s\\t\""),
            (b"\x7f", "#7F#"),
            (b"a\xa0", "#61A0#"),
            (b"a\xff", "\"a\u{ff}\""),
            (b"\xe9", "#E9#"),
            (b"\x00", "#00#"),
            (b"\x00a", "#0061#"),
            (b"a b\x00", "\"a b\\x00\""),
            (b"\ta\x00\xc4", "\"\\ta\\x00\u{c4}\""),
        ];
        for (atom, expected) in cases {
            let sexp = Sexp::list(vec![Sexp::atom(atom)]);
            let mut want = b"(".to_vec();
            want.extend(expected.chars().map(|c| c as u32 as u8));
            want.extend_from_slice(b")\n");
            assert_eq!(sexp.to_advanced(), want, "{atom:?}");
            assert_eq!(Sexp::parse(&sexp.to_advanced()), Ok(sexp), "round trip");
        }
    }

    #[test]
    fn a_token_with_a_nul_prints_raw_as_libgcrypt_does() {
        let sexp = Sexp::list(vec![Sexp::atom(&b"e\x00"[..])]);
        assert_eq!(sexp.to_advanced(), b"(e\x00)\n");
    }

    #[test]
    fn find_token_searches_depth_first_in_textual_order() {
        let sexp = Sexp::parse(b"(x (y (q 1:a)) (q 1:b))").expect("parses");
        assert_eq!(
            sexp.find_token("q")
                .and_then(|q| q.as_list())
                .map(|l| &l[1]),
            Some(&Sexp::atom("a"))
        );
        assert!(sexp.find_token("z").is_none());
        assert_eq!(sexp.find_token("x"), Some(&sexp));
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let mut deep = vec![b'('; 100_000];
        deep.extend(vec![b')'; 100_000]);
        assert_eq!(
            Sexp::parse(&deep),
            Err(SexpError::TooDeep { max: MAX_DEPTH })
        );
        let ok = format!("{}{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Sexp::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn oversized_input_is_refused() {
        let big = vec![b' '; MAX_INPUT_LEN + 1];
        assert!(matches!(Sexp::parse(&big), Err(SexpError::TooLarge { .. })));
    }

    #[test]
    fn bad_length_prefixes_are_refused() {
        for input in [
            &b"(5:abc)"[..],
            b"(99999999999999999999999:a)",
            b"(18446744073709551615:a)",
            b"(3)",
            b"(3x)",
            b"(2\"abc\")",
            b"(03:abc)",
            b"(4#6869#)",
        ] {
            let err = Sexp::parse(input).expect_err("must fail");
            assert!(
                matches!(
                    err,
                    SexpError::BadLength { .. } | SexpError::LengthMismatch { .. }
                ),
                "{input:?}: {err:?}"
            );
        }
    }

    #[test]
    fn truncated_input_is_refused_at_every_cut() {
        let full = vector("signing-key.sec");
        for cut in 0..full.len() - 1 {
            assert!(Sexp::parse(&full[..cut]).is_err(), "cut at {cut}");
        }
        let canonical = Sexp::parse(&full).expect("parses").to_canonical();
        for cut in 0..canonical.len() {
            assert!(Sexp::parse(&canonical[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_atoms_and_structure_are_refused() {
        let cases: [(&[u8], SexpError); 11] = [
            (b"", SexpError::Empty),
            (b"  \n", SexpError::Empty),
            (b"foo", SexpError::NotAList),
            (b"(a))", SexpError::TrailingData { offset: 3 }),
            (b"(#ABC#)", SexpError::BadHex { offset: 1 }),
            (b"(#AG#)", SexpError::BadHex { offset: 1 }),
            (b"(|!!|)", SexpError::BadBase64 { offset: 1 }),
            (b"(| Zm9v|)", SexpError::BadBase64 { offset: 1 }),
            (b"(||)", SexpError::BadBase64 { offset: 1 }),
            (b"(\"\\q\")", SexpError::BadEscape { offset: 2 }),
            (b"([hint]x)", SexpError::DisplayHint { offset: 1 }),
        ];
        for (input, expected) in cases {
            assert_eq!(Sexp::parse(input), Err(expected), "{input:?}");
        }
        assert!(matches!(
            Sexp::parse(b"(a \x01)"),
            Err(SexpError::UnexpectedByte { byte: 1, .. })
        ));
        assert!(matches!(
            Sexp::parse(b"(\"\\777\")"),
            Err(SexpError::BadEscape { .. })
        ));
    }

    #[test]
    fn canonical_form_round_trips_binary_atoms() {
        let sexp = Sexp::list(vec![
            tok("k"),
            Sexp::atom(vec![0, 1, 2, b'(', b')', b':', 0xff]),
            Sexp::list(Vec::new()),
        ]);
        let canonical = sexp.to_canonical();
        assert_eq!(canonical, b"(1:k7:\x00\x01\x02():\xff())");
        assert_eq!(Sexp::parse(&canonical), Ok(sexp.clone()));
        assert_eq!(Sexp::parse(&sexp.to_advanced()), Ok(sexp));
    }
}
