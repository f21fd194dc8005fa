//! Parsing of addresses and sizes given on the command line (hex `0x..` or decimal).

/// Parses `0x`-prefixed hexadecimal or plain decimal; `_` separators are allowed.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let cleaned: String = trimmed.chars().filter(|&c| c != '_').collect();
    let (digits, radix) = match cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (cleaned.as_str(), 10),
    };
    if digits.is_empty() {
        return Err(format!(
            "`{trimmed}` is not a number (use hex 0x.. or decimal)"
        ));
    }
    u64::from_str_radix(digits, radix)
        .map_err(|error| format!("`{trimmed}` is not a number (use hex 0x.. or decimal): {error}"))
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn hex_and_decimal() {
        assert_eq!(parse_number("0x7f000000"), Ok(0x7f00_0000));
        assert_eq!(parse_number("0X10"), Ok(16));
        assert_eq!(parse_number("4096"), Ok(4096));
        assert_eq!(parse_number("0x100_0000"), Ok(0x100_0000));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_number("").is_err());
        assert!(parse_number("0x").is_err());
        assert!(parse_number("12k").is_err());
        assert!(parse_number("-1").is_err());
        assert!(parse_number("0x1_0000_0000_0000_0000").is_err());
    }
}
