//! `llama_token_type` (gguf-py's `TokenType`): the values of `tokenizer.ggml.token_type`, shared
//! by the converter that writes them and the tokenizers that read them.

/// What a vocabulary entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    /// An ordinary piece of text.
    Normal = 1,
    /// The unknown-token placeholder.
    Unknown = 2,
    /// A control token (BOS, EOS, chat markers): never produced from plain text.
    Control = 3,
    /// An added token matched verbatim before tokenization.
    UserDefined = 4,
    /// A slot no piece fills.
    Unused = 5,
    /// A raw byte `<0xNN>`.
    Byte = 6,
}

impl TokenType {
    /// The type stored as `id`, if it is one.
    pub fn from_id(id: i32) -> Option<TokenType> {
        Some(match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TokenType;

    #[test]
    fn ids_round_trip() {
        for id in 1..=6 {
            assert_eq!(TokenType::from_id(id).map(|t| t as i32), Some(id));
        }
        assert_eq!(TokenType::from_id(0), None);
    }
}
