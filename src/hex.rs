//! Lower-case hexadecimal into a string the caller owns: generated ids,
//! cache keys, Kiro's machine id and tool-name digests all want the same
//! digits, and `format!("{b:02x}")` per byte allocates for each.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends two hex digits per byte of `bytes`, most significant first.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// `bytes` in hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_zero_padded_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let mut out = String::from("x_");
        push_hex(&mut out, &0xabu64.to_be_bytes());
        // An id's counter tail: its low 32 bits (`protocol::ids`).
        push_hex(&mut out, &(0x1_0000_00ffu64 as u32).to_be_bytes());
        assert_eq!(out, "x_00000000000000ab000000ff");
    }
}
