//! The chunked transfer coding of request bodies (RFC 9112 §7.1), decoded
//! incrementally and as strictly as the head is parsed.

use super::request::RequestError;

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// As strict as the head parser, so that no front proxy can read a body
/// differently (a smuggling seam): every line ends in CRLF,
/// `chunk-size = 1*HEXDIG` with nothing around it, chunk extensions
/// follow their grammar, data is followed by exactly CRLF, and trailer
/// lines go through the head's field-line parser and limits before they
/// are discarded. Sizes are checked against the limit as soon as a
/// chunk-size line is complete, so a declared `ffffffffffff` chunk is
/// refused without allocating it; the bytes spent on framing are bounded
/// too, so a small body cannot come wrapped in gigabytes of extensions.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    limit: usize,
    /// Data bytes declared so far.
    total: usize,
    /// Bytes of chunk-size lines and of the CRLFs after data.
    framing: usize,
    /// Bytes of chunk extensions.
    extensions: usize,
    /// The current chunk-size or trailer line, CR included.
    line: Vec<u8>,
    trailer_bytes: usize,
    trailer_fields: usize,
    max_trailer_bytes: usize,
    max_trailer_fields: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    /// The CR after a chunk's data is due.
    DataCr,
    /// The LF after a chunk's data is due.
    DataLf,
    Trailer,
    Done,
}

/// Longest chunk-size line (size and extensions, CRLF not counted).
pub(super) const MAX_CHUNK_LINE: usize = 4096;
/// Most chunk-extension bytes accepted in one body. Nothing aiproxy
/// serves uses extensions; the bound only has to let odd clients through.
pub(super) const MAX_CHUNK_EXTENSIONS: usize = 64 * 1024;
/// Framing bytes (chunk-size lines and CRLFs) accepted per data byte,
/// beyond [`MAX_FRAMING_SLACK`]: one-byte chunks (`1\r\nx\r\n`, five
/// framing bytes for one of data) still pass; a megabyte of data wrapped
/// in gigabytes of leading zeros or extensions does not.
pub(super) const MAX_FRAMING_PER_BYTE: usize = 8;
/// Framing bytes accepted whatever the data.
pub(super) const MAX_FRAMING_SLACK: usize = 64 * 1024;
/// Trailer limits of [`ChunkedDecoder::new`], the default head limits;
/// [`ChunkedDecoder::trailer_limits`] sets the configured ones.
pub(super) const DEFAULT_TRAILER_BYTES: usize = 32 * 1024;
pub(super) const DEFAULT_TRAILER_FIELDS: usize = 100;

impl ChunkedDecoder {
    /// A decoder that refuses bodies larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: ChunkState::Size,
            limit,
            total: 0,
            framing: 0,
            extensions: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            trailer_fields: 0,
            max_trailer_bytes: DEFAULT_TRAILER_BYTES,
            max_trailer_fields: DEFAULT_TRAILER_FIELDS,
        }
    }

    /// Bounds the trailer section as the head is bounded: at most
    /// `max_bytes` bytes and `max_fields` field lines, else 431.
    pub fn trailer_limits(mut self, max_bytes: usize, max_fields: usize) -> Self {
        self.max_trailer_bytes = max_bytes;
        self.max_trailer_fields = max_fields;
        self
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending data to `out`; returns how many input
    /// bytes were consumed (less than `input.len()` only once done).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RequestError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(remaining) => {
                    let take = remaining.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.state = if take == remaining {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let (due, next) = if self.state == ChunkState::DataCr {
                        (b'\r', ChunkState::DataLf)
                    } else {
                        (b'\n', ChunkState::Size)
                    };
                    if input[i] != due {
                        return Err(RequestError::BadRequest("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.count_framing(1)?;
                    self.state = next;
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let byte = input[i];
                    i += 1;
                    self.line_byte(byte)?;
                }
            }
        }
        Ok(i)
    }

    /// Takes one byte of a chunk-size or trailer line; a complete line
    /// moves the state on.
    fn line_byte(&mut self, byte: u8) -> Result<(), RequestError> {
        if self.state == ChunkState::Size {
            self.count_framing(1)?;
        } else {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.max_trailer_bytes {
                return Err(RequestError::HeadersTooLarge);
            }
        }
        let after_cr = self.line.last() == Some(&b'\r');
        match byte {
            b'\n' if after_cr => {
                self.line.pop();
                let line = std::mem::take(&mut self.line);
                self.state = if self.state == ChunkState::Size {
                    self.on_size_line(&line)?
                } else {
                    self.on_trailer_line(&line)?
                };
                // Keep the allocation for the next line.
                self.line = line;
                self.line.clear();
                Ok(())
            }
            b'\n' => Err(RequestError::BadRequest("chunk line ends in a bare LF")),
            _ if after_cr => Err(RequestError::BadRequest("bare CR in a chunk line")),
            b if b != b'\r'
                && self.state == ChunkState::Size
                && self.line.len() >= MAX_CHUNK_LINE =>
            {
                Err(RequestError::BadRequest("chunk line too long"))
            }
            _ => {
                self.line.push(byte);
                Ok(())
            }
        }
    }

    fn count_framing(&mut self, n: usize) -> Result<(), RequestError> {
        self.framing += n;
        let allowed = self
            .total
            .saturating_mul(MAX_FRAMING_PER_BYTE)
            .saturating_add(MAX_FRAMING_SLACK);
        if self.framing > allowed {
            return Err(RequestError::BadRequest(
                "chunk framing out of proportion to the data",
            ));
        }
        Ok(())
    }

    /// `chunk-size [ chunk-ext ]`, CRLF removed.
    fn on_size_line(&mut self, line: &[u8]) -> Result<ChunkState, RequestError> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // `chunk-size = 1*HEXDIG`: no sign or space, which
        // `from_str_radix` and `trim` would take; 16 digits fit a u64.
        if digits == 0 || digits > 16 {
            return Err(RequestError::BadRequest("invalid chunk size"));
        }
        let (size_text, ext) = line.split_at(digits);
        if !is_chunk_ext(ext) {
            return Err(RequestError::BadRequest("invalid chunk extension"));
        }
        self.extensions += ext.len();
        if self.extensions > MAX_CHUNK_EXTENSIONS {
            return Err(RequestError::BadRequest("chunk extensions too long"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or(RequestError::BadRequest("invalid chunk size"))?;
        if size == 0 {
            return Ok(ChunkState::Trailer);
        }
        let size = usize::try_from(size).map_err(|_| RequestError::BodyTooLarge)?;
        self.total = self
            .total
            .checked_add(size)
            .ok_or(RequestError::BodyTooLarge)?;
        if self.total > self.limit {
            return Err(RequestError::BodyTooLarge);
        }
        Ok(ChunkState::Data(size))
    }

    /// One trailer line, CRLF removed; the empty line ends the body.
    fn on_trailer_line(&mut self, line: &[u8]) -> Result<ChunkState, RequestError> {
        if line.is_empty() {
            return Ok(ChunkState::Done);
        }
        self.trailer_fields += 1;
        if self.trailer_fields > self.max_trailer_fields {
            return Err(RequestError::HeadersTooLarge);
        }
        // The head's parser on this one line: token name, colon, a value
        // of visible characters, no obs-fold. It answers Partial for a
        // good field line, since the empty line that ends a block is not
        // there. Values must be UTF-8, as in the head.
        let mut field = Vec::with_capacity(line.len() + 2);
        field.extend_from_slice(line);
        field.extend_from_slice(b"\r\n");
        let mut slot = [httparse::EMPTY_HEADER; 1];
        match httparse::parse_headers(&field, &mut slot) {
            Ok(httparse::Status::Partial) if std::str::from_utf8(line).is_ok() => {
                Ok(ChunkState::Trailer)
            }
            _ => Err(RequestError::BadRequest("malformed trailer field")),
        }
    }
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`
/// with `chunk-ext-name = token` and `chunk-ext-val = token / quoted-string`
/// (RFC 9112 §7.1.1). Whitespace is only allowed where BWS is, so a size
/// followed by a space alone is refused.
fn is_chunk_ext(mut ext: &[u8]) -> bool {
    while !ext.is_empty() {
        let Some(rest) = skip_bws(ext).strip_prefix(b";") else {
            return false;
        };
        let rest = skip_bws(rest);
        let name = token_len(rest);
        if name == 0 {
            return false;
        }
        ext = &rest[name..];
        if let Some(value) = skip_bws(ext).strip_prefix(b"=") {
            let value = skip_bws(value);
            let len = if value.first() == Some(&b'"') {
                quoted_string_len(value)
            } else {
                token_len(value)
            };
            if len == 0 {
                return false;
            }
            ext = &value[len..];
        }
    }
    true
}

fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Length of the `token` (`1*tchar`) that `s` starts with; 0 if none.
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .count()
}

/// Length of the `quoted-string` that `s` starts with, quotes included;
/// 0 if it is not one (unterminated, or a control byte inside).
fn quoted_string_len(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|&q| text(q)) => i += 2,
            b'\\' => return 0,
            b if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
}
