//! Bot verdicts: whether a visitor's User-Agent is a known bot (the maintained `isbot` list plus
//! `elevate.bot_patterns`), remembered per distinct User-Agent. Guarantees: the verdict is
//! exactly `isbot::Bots::is_bot`'s for every input; the memo holds at most [`MEMO_ENTRIES`]
//! User-Agents of at most [`MEMO_MAX_LEN`] bytes (≈ 0.5 MiB), and is emptied when full. Limits:
//! a fleet of more distinct User-Agents than that runs the regexes more often, never wrongly.
//!
//! Most of a shop's traffic comes from a few hundred browser builds, and matching one against
//! the bot list was 2.3 % of the sink's CPU on the benchmark's typical records
//! (docs/performance.md); a lookup in the memo costs a hash of the text.

use std::sync::Mutex;

use crate::config::{ConfigError, ElevateConfig};
use crate::util::{lock, FastMap};

/// User-Agents the memo remembers before it is emptied.
pub const MEMO_ENTRIES: usize = 1024;
/// Longer User-Agents are matched every time, not remembered.
pub const MEMO_MAX_LEN: usize = 512;

/// The bot filter of `elevate.skip_bots`, with its memo.
#[derive(Debug)]
pub struct Bots {
    list: isbot::Bots,
    /// foldhash, seeded per process, instead of the default SipHash, whose hashing of a
    /// ~100-byte User-Agent (a lookup per record) was about 1 % of the map bench's time. The keys
    /// are visitors' text, but the memo never holds more than [`MEMO_ENTRIES`], so no crafted
    /// set of them makes a lookup long.
    memo: Mutex<FastMap<Box<str>, bool>>,
}

impl Bots {
    /// The filter `elevate` asks for: None when `skip_bots` is off; a `bot_patterns` entry that
    /// is not a regular expression stops start-up, naming it.
    pub fn from_config(elevate: &ElevateConfig) -> Result<Option<Bots>, ConfigError> {
        if !elevate.skip_bots {
            return Ok(None);
        }
        for p in &elevate.bot_patterns {
            regex::Regex::new(&p.to_ascii_lowercase()).map_err(|e| {
                ConfigError::invalid(
                    "elevate.bot_patterns",
                    format!("{p:?} is not a regular expression: {e}"),
                )
            })?;
        }
        let mut list = isbot::Bots::default();
        if !elevate.bot_patterns.is_empty() {
            let extra: Vec<&str> = elevate.bot_patterns.iter().map(String::as_str).collect();
            list.append(&extra);
        }
        Ok(Some(Bots {
            list,
            memo: Mutex::new(FastMap::with_capacity_and_hasher(
                MEMO_ENTRIES,
                foldhash::fast::RandomState::default(),
            )),
        }))
    }

    /// Whether `user_agent` is a known bot.
    pub fn is_bot(&self, user_agent: &str) -> bool {
        if user_agent.len() > MEMO_MAX_LEN {
            return self.list.is_bot(user_agent);
        }
        if let Some(&bot) = lock(&self.memo).get(user_agent) {
            return bot;
        }
        let bot = self.list.is_bot(user_agent);
        let mut memo = lock(&self.memo);
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(user_agent.into(), bot);
        bot
    }

    /// User-Agents remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        lock(&self.memo).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bots(patterns: &[&str]) -> Bots {
        let elevate = ElevateConfig {
            skip_bots: true,
            bot_patterns: patterns.iter().map(|p| p.to_string()).collect(),
            ..ElevateConfig::default()
        };
        Bots::from_config(&elevate).unwrap().unwrap()
    }

    const AGENTS: [&str; 6] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile/15E148 Safari/604.1",
        "ShopMonitor/1.0",
        "",
    ];

    #[test]
    fn remembered_verdicts_are_the_lists() {
        let memo = bots(&["shopmonitor"]);
        let mut plain = isbot::Bots::default();
        plain.append(&["shopmonitor"]);
        for round in 0..3 {
            for ua in AGENTS {
                assert_eq!(memo.is_bot(ua), plain.is_bot(ua), "{ua:?}, round {round}");
            }
        }
        assert_eq!(memo.remembered(), AGENTS.len());
        assert!(memo.is_bot(AGENTS[4]) && !memo.is_bot(AGENTS[0]));
    }

    #[test]
    fn the_memo_stays_bounded() {
        let memo = bots(&[]);
        for i in 0..3 * MEMO_ENTRIES {
            memo.is_bot(&format!("Agent/{i}"));
            assert!(memo.remembered() <= MEMO_ENTRIES);
        }
        let long = format!("Mozilla/5.0 {}", "x".repeat(MEMO_MAX_LEN));
        let before = memo.remembered();
        assert!(!memo.is_bot(&long));
        assert_eq!(
            memo.remembered(),
            before,
            "a text past MEMO_MAX_LEN is not remembered"
        );
    }

    #[test]
    fn off_unless_asked_and_bad_patterns_are_named() {
        let off = ElevateConfig {
            skip_bots: false,
            ..ElevateConfig::default()
        };
        assert!(Bots::from_config(&off).unwrap().is_none());
        let bad = ElevateConfig {
            skip_bots: true,
            bot_patterns: vec!["(".into()],
            ..ElevateConfig::default()
        };
        let err = Bots::from_config(&bad).unwrap_err().to_string();
        assert!(err.contains("elevate.bot_patterns"), "{err}");
    }

    proptest! {
        #[test]
        fn any_text_gets_the_lists_verdict(uas in proptest::collection::vec("[ -~]{0,40}(bot|spider|Chrome)?", 1..20)) {
            let memo = bots(&[]);
            let plain = isbot::Bots::default();
            for ua in uas.iter().chain(uas.iter()) {
                prop_assert_eq!(memo.is_bot(ua), plain.is_bot(ua));
            }
        }
    }
}
