//! Fuzz target `graph_json`: any body as one of the JSON answers the HTTP checks read (Graph
//! users, deleted items, SKUs, subscriptions, licence details, role assignments, health
//! overviews; the token, discovery and user realm answers of Entra ID; RDAP; error bodies),
//! decoded and judged by the checks' own code through `tw_entra::fuzzing::decode_for_fuzzing`.
//! The first byte picks the answer kind, the rest is the body.
//!
//! A malformed or hostile answer must be an `unknown` verdict with bounded error text, the
//! evidence must serialise (it is stored as JSON), and an access token in a token answer must
//! never reach a summary, an error text or the evidence.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tw_entra::fuzzing::{decode_for_fuzzing, Answer};

/// Longest error text a check records for an unreadable body (tw-entra cuts the decoder's
/// words at 300 bytes and adds a short prefix): evidence stays small.
const MAX_ERROR_TEXT: usize = 400;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let answer = Answer::ALL[usize::from(selector) % Answer::ALL.len()];
    let result = decode_for_fuzzing(answer, body);
    let mut texts = Vec::new();
    match &result {
        Err(text) => {
            assert!(text.len() <= MAX_ERROR_TEXT, "{} bytes: {text}", text.len());
            texts.push(text.clone());
        }
        Ok(outcomes) => {
            for outcome in outcomes {
                let evidence = serde_json::to_string(&outcome.evidence)
                    .unwrap_or_else(|err| panic!("evidence does not serialise: {err}"));
                texts.push(outcome.summary.clone());
                texts.push(evidence);
            }
        }
    }
    if answer == Answer::Token {
        // Long enough not to occur by chance in the fixed texts ("token valid until …").
        let token = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned))
            .filter(|token| token.len() >= 48);
        if let Some(token) = token {
            assert!(
                texts.iter().all(|text| !text.contains(&token)),
                "the access token leaked into {texts:?}"
            );
        }
    }
});
