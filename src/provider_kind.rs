//! The provider kinds: names, long ids and protocol families. A leaf that
//! configuration, routing and the providers all use.

use std::fmt;
use std::str::FromStr;

use crate::protocol::Protocol;

/// A provider type, as named on the command line and in path prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat completions API.
    OpenAiCustom,
    /// The Anthropic Messages API (or a compatible one).
    ClaudeCustom,
    /// Google Code Assist through a Gemini CLI login.
    GeminiCli,
    /// Claude through a Kiro IDE login.
    KiroApi,
    /// Qwen through a Qwen Code login.
    QwenApi,
    /// Built-in deterministic offline provider.
    Mock,
}

impl ProviderKind {
    /// Every provider kind, in documentation order.
    pub const ALL: [ProviderKind; 6] = [
        Self::OpenAiCustom,
        Self::ClaudeCustom,
        Self::GeminiCli,
        Self::KiroApi,
        Self::QwenApi,
        Self::Mock,
    ];

    /// The canonical aiproxy name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAiCustom => "openai-custom",
            Self::ClaudeCustom => "claude-custom",
            Self::GeminiCli => "gemini-cli",
            Self::KiroApi => "kiro-api",
            Self::QwenApi => "qwen-api",
            Self::Mock => "mock",
        }
    }

    /// The protocol family the upstream speaks. An explicit table, because
    /// the names do not encode it (kiro-api speaks Anthropic, qwen-api
    /// OpenAI).
    pub fn family(self) -> Protocol {
        match self {
            Self::OpenAiCustom | Self::QwenApi | Self::Mock => Protocol::OpenAi,
            Self::ClaudeCustom | Self::KiroApi => Protocol::Anthropic,
            Self::GeminiCli => Protocol::Gemini,
        }
    }

    /// Parses a name or one of AIClient-2-API's long ids
    /// (`gemini-cli-oauth`, `claude-kiro-oauth`, `openai-qwen-oauth`).
    /// Any case: every request path's first segment goes through here
    /// (twice: screening and serving), so it compares without allocating
    /// a lowercase copy.
    pub fn parse(name: &str) -> Option<Self> {
        const LONG_IDS: [(&str, ProviderKind); 3] = [
            ("gemini-cli-oauth", ProviderKind::GeminiCli),
            ("claude-kiro-oauth", ProviderKind::KiroApi),
            ("openai-qwen-oauth", ProviderKind::QwenApi),
        ];
        Self::ALL
            .into_iter()
            .map(|kind| (kind.name(), kind))
            .chain(LONG_IDS)
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, kind)| kind)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| {
            format!(
                "unknown provider {s:?} (expected one of openai-custom, claude-custom, \
                 gemini-cli, kiro-api, qwen-api, mock)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_long_ids_parse_in_any_case() {
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(kind.name()), Some(kind));
            assert_eq!(ProviderKind::parse(&kind.name().to_uppercase()), Some(kind));
        }
        assert_eq!(
            ProviderKind::parse("Claude-Kiro-OAuth"),
            Some(ProviderKind::KiroApi)
        );
        assert_eq!(
            ProviderKind::parse("gemini-cli-oauth"),
            Some(ProviderKind::GeminiCli)
        );
        assert_eq!(
            ProviderKind::parse("OPENAI-QWEN-OAUTH"),
            Some(ProviderKind::QwenApi)
        );
        for other in [
            "",
            "v1",
            "mock ",
            "openai",
            "kiro-api-",
            "gemini-cli-oauth2",
        ] {
            assert_eq!(ProviderKind::parse(other), None, "{other:?}");
        }
    }
}
