//! Table tests for [`evaluate`]: a pattern of verdicts in, a compact string of events out.
//!
//! Pattern: one character per observation, 5 minutes apart, `now` = `started_at`:
//! `O` ok, `W` warning, `C` critical, `U` unknown, `S` shutdown (unknown with reason
//! `shutdown`); `o w c u` are late arrivals: that verdict with a `started_at` one minute
//! before the previous observation's (at this slot's `now`); `=` replays the previous
//! observation exactly. `X*n` and `(XY)*n` repeat; spaces are ignored.
//!
//! Events: `F(c)` Firing critical, `F(w)` Firing warning, `P(c)`/`P(w)` Repeat, `R` Resolved,
//! `B` Blind, `BR` BlindResolved, each `@index` of the observation that caused it.

use std::collections::BTreeSet;
use std::time::Duration;

use tw_core::{CheckKind, Evidence, Observation, Reason, Status, TenantName, Timestamp};

use crate::{evaluate, AlertEvent, AlertState, EventKind, Rules, Severity};

/// 2026-11-23T03:00:00Z.
const T0: i64 = 1_795_402_800_000;
const STEP: i64 = 5 * 60 * 1000;

fn slot(index: usize) -> Timestamp {
    Timestamp(T0 + index as i64 * STEP)
}

fn observation(verdict: char, started_at: Timestamp) -> Observation {
    let (status, reason, summary) = match verdict {
        'O' => (
            Status::Ok,
            Reason::RecipientAccepted,
            "RCPT 250 2.1.5 Recipient OK",
        ),
        'W' => (
            Status::Warning,
            Reason::SpfMissing,
            "SPF does not include spf.protection.outlook.com",
        ),
        'C' => (
            Status::Critical,
            Reason::RecipientNotFound,
            "RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound",
        ),
        'U' => (
            Status::Unknown,
            Reason::Timeout,
            "no reply to RCPT within 30s",
        ),
        'S' => (
            Status::Unknown,
            Reason::Shutdown,
            "daemon shut down mid-probe",
        ),
        other => panic!("unknown verdict {other:?}"),
    };
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::SmtpRcpt,
        target: "admin@contoso.com".to_owned(),
        scheduled_for: started_at,
        started_at,
        elapsed: Duration::from_millis(800),
        status,
        reason,
        summary: summary.to_owned(),
        evidence: Evidence::None,
    }
}

fn expand(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let unit: String = if chars[i] == '(' {
            let close = i + chars[i..].iter().position(|&c| c == ')').unwrap();
            let unit = chars[i + 1..close].iter().collect();
            i = close + 1;
            unit
        } else {
            i += 1;
            chars[i - 1].to_string()
        };
        if chars.get(i) == Some(&'*') {
            let digits: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            i += 1 + digits.len();
            out.push_str(&unit.repeat(digits.parse().unwrap()));
        } else {
            out.push_str(&unit);
        }
    }
    out
}

struct Run {
    state: AlertState,
    events: Vec<(usize, AlertEvent)>,
}

fn run(rules: &Rules, pattern: &str) -> Run {
    let mut state = AlertState::default();
    let mut events = Vec::new();
    let mut previous: Option<Observation> = None;
    for (index, verdict) in expand(pattern).chars().enumerate() {
        let now = slot(index);
        let observation = match verdict {
            '=' => previous.clone().expect("= needs a previous observation"),
            'o' | 'w' | 'c' | 'u' => {
                let before = previous
                    .as_ref()
                    .expect("late arrival needs a previous one");
                observation(
                    verdict.to_ascii_uppercase(),
                    before.started_at.minus(Duration::from_secs(60)),
                )
            }
            _ => observation(verdict, now),
        };
        let (next, new) = evaluate(&state, &observation, rules, now);
        events.extend(new.into_iter().map(|event| (index, event)));
        state = next;
        previous = Some(observation);
    }
    Run { state, events }
}

fn notation(events: &[(usize, AlertEvent)]) -> String {
    let severity = |event: &AlertEvent| match event.severity {
        Severity::Critical => "(c)",
        Severity::Warning => "(w)",
        Severity::Blind => "(b)",
    };
    events
        .iter()
        .map(|(index, event)| match event.kind {
            EventKind::Firing => format!("F{}@{index}", severity(event)),
            EventKind::Repeat => format!("P{}@{index}", severity(event)),
            EventKind::Resolved => format!("R@{index}"),
            EventKind::Blind => format!("B@{index}"),
            EventKind::BlindResolved => format!("BR@{index}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_with(rules: &Rules, pattern: &str, expect: &str) {
    let got = notation(&run(rules, pattern).events);
    assert_eq!(got, expect, "pattern {pattern:?} with {rules:?}");
}

fn check(pattern: &str, expect: &str) {
    check_with(&Rules::defaults(), pattern, expect);
}

fn rules(confirm: u32, recover: u32) -> Rules {
    Rules {
        confirm,
        recover,
        ..Rules::defaults()
    }
}

#[test]
fn pattern_helper_expands_repeats_and_groups() {
    assert_eq!(expand("OC*3 (CO)*2 U"), "OCCCCOCOU");
    assert_eq!(slot(0).to_string(), "2026-11-23T03:00:00.000Z");
    assert_eq!(slot(12).to_string(), "2026-11-23T04:00:00.000Z");
}

#[test]
fn a_transient_fault_never_pages() {
    check("", "");
    check("O*10", "");
    check("C", "");
    check("OCO", "");
    check("OCOCOCOWOWO", "");
    check("U*6", "");
    check("OUUUUUO", "");
}

#[test]
fn a_non_ok_verdict_fires_after_confirm_in_a_row() {
    check("OCC", "F(c)@2");
    check("OCCC", "F(c)@2");
    check("OWW", "F(w)@2");
    check("OCOC", "");
    check("OCOCC", "F(c)@4");
    check_with(&rules(3, 1), "CCOCCC", "F(c)@5");
    check_with(&rules(1, 1), "OC", "F(c)@1");
    // Zero would mean "fire on nothing"; it acts as 1.
    check_with(&rules(0, 0), "OCO", "F(c)@1 R@2");
}

#[test]
fn unknown_neither_advances_nor_resets_a_pending_confirmation() {
    check("OCUC", "F(c)@3");
    check("OCUUUC", "F(c)@5");
    check("UUCUC", "F(c)@4");
    check("OCUO", "");
    check("OCUOC", "");
}

#[test]
fn the_latest_confirming_verdict_sets_the_severity() {
    check("WC", "F(c)@1");
    check("CW", "F(w)@1");
    check("CUW", "F(w)@2");
}

#[test]
fn resolves_after_recover_ok_verdicts_and_unknown_does_not_recover() {
    check("CCO", "F(c)@1 R@2");
    check("CCOO", "F(c)@1 R@2");
    check("CCUO", "F(c)@1 R@3");
    check("CCU*6 O", "F(c)@1 R@8");
    check("CCU*6", "F(c)@1");
    let two = rules(2, 2);
    check_with(&two, "CCO", "F(c)@1");
    check_with(&two, "CCOO", "F(c)@1 R@3");
    check_with(&two, "CCOCOO", "F(c)@1 R@5");
    check_with(&two, "CCOUO", "F(c)@1 R@4");
}

#[test]
fn repeats_every_repeat_interval_after_the_last_message() {
    // The Firing goes out at 0:05 (the second critical), so the repeat is due at 4:05,
    // the 50th observation: 49 criticals end just before it.
    check("C*49", "F(c)@1");
    check("C*50", "F(c)@1 P(c)@49");
    check("C*98", "F(c)@1 P(c)@49 P(c)@97");
    check("W*50", "F(w)@1 P(w)@49");
    // Unknowns keep a firing alert firing and still repeat it (and go blind on their own).
    check("CC U*48", "F(c)@1 B@8 P(c)@49");
    // An escalation is a message: the repeat timer restarts from it.
    check("WW C*48", "F(w)@1 F(c)@2");
    check("WW C*49", "F(w)@1 F(c)@2 P(c)@50");
}

#[test]
fn nothing_is_paged_on_an_ok_verdict() {
    // With recover 2 the repeat due at the ok (4:05) waits for the next non-ok.
    check_with(&rules(2, 2), "C*49 O C", "F(c)@1 P(c)@50");
    check_with(&rules(2, 2), "C*49 O U", "F(c)@1 P(c)@50");
    check("C*49 O", "F(c)@1 R@49");
}

#[test]
fn prolonged_unknown_is_its_own_blind_alert() {
    check("U*6", "");
    check("U*7", "B@6");
    check("U*20", "B@6");
    check("O U*7", "B@7");
    check("U*7 O", "B@6 BR@7");
    check("U*7 C", "B@6 BR@7");
    check("U*7 CC", "B@6 BR@7 F(c)@8");
    check("U*3 O U*4", "");
    check("U*3 C U*4", "");
}

#[test]
fn blind_and_firing_are_independent() {
    check("CC U*7 O", "F(c)@1 B@8 BR@9 R@9");
    check("CC U*7 C", "F(c)@1 B@8 BR@9");
    check("CC U*7 C O", "F(c)@1 B@8 BR@9 R@10");
    check("C U*7 C", "B@7 BR@8 F(c)@8");
}

#[test]
fn blind_messages_are_rationed_like_firing_ones() {
    check("U*7 O U*7 O", "B@6 BR@7");
    // The second blind run starts at 0:40; the next Blind may go out 4 h after 0:30.
    check("U*7 O U*60", "B@6 BR@7 B@54");
    check("U*7 O U*47 O", "B@6 BR@7 B@54 BR@55");
}

#[test]
fn warning_to_critical_escalates_with_a_new_firing() {
    check("WWC", "F(w)@1 F(c)@2");
    check("WWCC", "F(w)@1 F(c)@2");
    check("WWCWC", "F(w)@1 F(c)@2");
    check("WWUC", "F(w)@1 F(c)@3");
    check("WWCO", "F(w)@1 F(c)@2 R@3");
    // Severity never goes down within an episode, so no message for it.
    check("CCW", "F(c)@1");
    check("CCWWW", "F(c)@1");
}

#[test]
fn a_critical_is_never_held_back_by_an_earlier_warning() {
    check("WWO CC", "F(w)@1 R@2 F(c)@4");
    // But the window then holds that critical's resolution like any other.
    check("WWO CC O CC", "F(w)@1 R@2 F(c)@4");
    check("WWO CC O*46", "F(w)@1 R@2 F(c)@4 R@50");
    // A warning is held back by a warning.
    check("WWO WW", "F(w)@1 R@2");
}

#[test]
fn flapping_sends_one_firing_and_one_resolved_per_window() {
    let flappy = rules(1, 1);
    check_with(&flappy, "(CO)*3", "F(c)@0 R@1");
    check_with(&flappy, "(CO)*24", "F(c)@0 R@1");
    // 4 h after the first Firing the window opens again.
    check_with(&flappy, "(CO)*25", "F(c)@0 R@1 F(c)@48 R@49");
    check_with(&flappy, "(CO)*60", "F(c)@0 R@1 F(c)@48 R@49 F(c)@96 R@97");
    check("(CCO)*20", "F(c)@1 R@2 F(c)@49 R@50");
}

#[test]
fn flapping_that_ends_firing_is_told_when_the_window_opens() {
    let flappy = rules(1, 1);
    // Held back at 0:10 and from 0:20; the first critical from 4:00 on tells the truth.
    check_with(&flappy, "(CO)*2 C*45", "F(c)@0 R@1 F(c)@48");
    check_with(&flappy, "(CO)*2 C*44", "F(c)@0 R@1");
    // An unknown at the opening still tells it (with the last non-ok verdict).
    check_with(&flappy, "(CO)*2 C U*44", "F(c)@0 R@1 B@11 F(c)@48");
    // Ending on ok: reality matches what was last sent, so nothing more.
    check_with(&flappy, "(CO)*3 O*60", "F(c)@0 R@1");
    check_with(&flappy, "(CO)*3 U*60", "F(c)@0 R@1 B@12");
    // A held-back resolution goes out at the first ok once its own window has opened.
    check_with(&flappy, "C*36 O C*12 O*36", "F(c)@0 R@36 F(c)@48 R@84");
    check_with(&flappy, "C*36 O C*12 O*35", "F(c)@0 R@36 F(c)@48");
}

#[test]
fn the_truth_telling_firing_reports_what_was_held_back() {
    let run = run(&rules(1, 1), "(CO)*2 C*45");
    let (index, event) = run.events.last().unwrap();
    assert_eq!(*index, 48);
    assert_eq!(event.kind, EventKind::Firing);
    assert_eq!(event.episode, 2);
    assert_eq!(event.since, slot(4), "since the current run of criticals");
    assert_eq!(
        event.summary,
        "RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound (flapping: 3 changes not notified)"
    );
    assert_eq!(
        event.dedup_key,
        "contoso/smtp_rcpt/admin@contoso.com/2/firing"
    );
}

#[test]
fn shutdown_observations_are_ignored() {
    check("CSC", "F(c)@2");
    check("S*10", "");
    check("CC SSS O", "F(c)@1 R@5");
    check("CC S*60", "F(c)@1");
    check("U S*5 U", "B@6");
    let before = run(&Rules::defaults(), "OCC").state;
    let after = run(&Rules::defaults(), "OCC S").state;
    assert_eq!(before, after);
}

#[test]
fn late_and_replayed_observations_are_ignored() {
    check("OCc", "");
    check("CCo", "F(c)@1");
    check("CC=", "F(c)@1");
    check("C=", "");
    check("U*6 =", "");
    check_with(&rules(2, 2), "CCO=", "F(c)@1");
    check_with(&rules(2, 2), "CCOo", "F(c)@1");
}

/// Every pattern of up to `len` verdicts from `alphabet`.
fn patterns(alphabet: &str, len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..len {
        frontier = frontier
            .iter()
            .flat_map(|p| alphabet.chars().map(move |c| format!("{p}{c}")))
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

#[test]
fn replaying_any_observation_gives_no_events_and_the_same_state() {
    let all_rules = [Rules::defaults(), rules(1, 1), rules(2, 2)];
    for rules in &all_rules {
        for pattern in patterns("OWCUS", 5) {
            let mut state = AlertState::default();
            for (index, verdict) in pattern.chars().enumerate() {
                let observation = observation(verdict, slot(index));
                let (next, _) = evaluate(&state, &observation, rules, slot(index));
                for later in [slot(index), slot(index + 100)] {
                    let (again, events) = evaluate(&next, &observation, rules, later);
                    assert!(events.is_empty(), "{pattern} at {index}: {events:?}");
                    assert_eq!(again, next, "{pattern} at {index}");
                }
                state = next;
            }
        }
    }
}

#[test]
fn evaluation_is_deterministic() {
    for pattern in ["CC U*48 O", "(CO)*30", "WWC U*10 O*3"] {
        let a = run(&Rules::defaults(), pattern);
        let b = run(&Rules::defaults(), pattern);
        assert_eq!(a.state, b.state);
        assert_eq!(a.events, b.events);
    }
}

#[test]
fn unknown_is_never_critical() {
    for rules in [Rules::defaults(), rules(1, 1)] {
        for pattern in patterns("OWU", 7) {
            let run = run(&rules, &pattern);
            for (_, event) in &run.events {
                assert_ne!(event.severity, Severity::Critical, "{pattern}");
                assert_ne!(event.status, Status::Critical, "{pattern}");
            }
        }
        for pattern in patterns("OU", 9) {
            for (_, event) in &run(&rules, &pattern).events {
                assert_eq!(event.severity, Severity::Blind, "{pattern}");
            }
        }
    }
}

/// A long, irregular but reproducible pattern (xorshift), biased towards flapping.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=2 => 'O',
                3..=5 => 'C',
                6 => 'W',
                7 | 8 => 'U',
                _ => 'S',
            }
        })
        .collect()
}

#[test]
fn dedup_keys_are_unique_and_messages_stay_within_their_windows() {
    let window = Rules::defaults().repeat_interval.as_millis() as u64;
    for rules in [Rules::defaults(), rules(1, 1), rules(2, 2)] {
        for seed in [1, 7, 42, 1234] {
            let run = run(&rules, &noise(3000, seed));
            assert!(run.events.len() > 10, "seed {seed}: too quiet to test");
            let keys: BTreeSet<&str> = run
                .events
                .iter()
                .map(|(_, e)| e.dedup_key.as_str())
                .collect();
            assert_eq!(keys.len(), run.events.len(), "seed {seed}: duplicate key");
            // Consecutive messages of one kind (Firing: of one severity) are a window apart.
            let mut last: Vec<(EventKind, Severity, Timestamp)> = Vec::new();
            for (index, event) in &run.events {
                if event.kind == EventKind::Repeat {
                    continue;
                }
                let at = slot(*index);
                if let Some((_, _, before)) = last
                    .iter()
                    .find(|(k, s, _)| *k == event.kind && *s == event.severity)
                {
                    assert!(
                        at.millis_since(*before) >= window,
                        "seed {seed}: {:?} at {index} too soon",
                        event.kind
                    );
                }
                last.retain(|(k, s, _)| !(*k == event.kind && *s == event.severity));
                last.push((event.kind, event.severity, at));
            }
        }
    }
}

#[test]
fn events_carry_since_at_episode_and_dedup_key() {
    let run = run(&Rules::defaults(), "OCC U*7 O C*90");
    let summary: Vec<(usize, EventKind, i64, i64, u64, &str)> = run
        .events
        .iter()
        .map(|(index, e)| {
            (
                *index,
                e.kind,
                (e.since.0 - T0) / STEP,
                (e.at.0 - T0) / STEP,
                e.episode,
                e.dedup_key.as_str(),
            )
        })
        .collect();
    let key = "contoso/smtp_rcpt/admin@contoso.com";
    assert_eq!(
        summary,
        [
            (2, EventKind::Firing, 1, 2, 1, &*format!("{key}/1/firing")),
            (9, EventKind::Blind, 3, 9, 2, &*format!("{key}/2/blind")),
            (
                10,
                EventKind::BlindResolved,
                3,
                10,
                2,
                &*format!("{key}/2/blind_resolved")
            ),
            (
                10,
                EventKind::Resolved,
                1,
                10,
                1,
                &*format!("{key}/1/resolved")
            ),
            // Confirmed again at 12, held back until 4 h after the Firing at 2.
            (
                50,
                EventKind::Firing,
                11,
                50,
                3,
                &*format!("{key}/3/firing")
            ),
            (
                98,
                EventKind::Repeat,
                11,
                98,
                3,
                &*format!("{key}/3/repeat/1")
            ),
        ]
    );
    let (_, blind_resolved) = &run.events[2];
    assert_eq!(blind_resolved.severity, Severity::Blind);
    assert_eq!(blind_resolved.status, Status::Ok);
    let (_, resolved) = &run.events[3];
    assert_eq!(resolved.severity, Severity::Critical);
    assert_eq!(resolved.reason, Reason::RecipientAccepted);
}

#[test]
fn an_escalation_has_its_own_key_in_the_same_episode() {
    let run = run(&Rules::defaults(), "WWC");
    let keys: Vec<&str> = run
        .events
        .iter()
        .map(|(_, e)| e.dedup_key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "contoso/smtp_rcpt/admin@contoso.com/1/firing",
            "contoso/smtp_rcpt/admin@contoso.com/1/escalated"
        ]
    );
    let (_, escalated) = &run.events[1];
    assert_eq!(escalated.since, slot(0));
    assert!(escalated.summary.ends_with("(escalated from warning)"));
}

#[test]
fn a_repeat_on_an_unknown_carries_the_last_non_ok_verdict() {
    let run = run(&Rules::defaults(), "CC U*48");
    let (index, repeat) = run.events.last().unwrap();
    assert_eq!((*index, repeat.kind), (49, EventKind::Repeat));
    assert_eq!(repeat.status, Status::Critical);
    assert_eq!(repeat.reason, Reason::RecipientNotFound);
    assert_eq!(
        repeat.summary,
        "RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound (latest check unknown: timeout)"
    );
    assert_eq!(repeat.at, slot(49));
}

#[test]
fn dedup_key_parts_are_escaped() {
    let mut observation = observation('C', slot(0));
    observation.target = "a/b%c@contoso.com".to_owned();
    let (state, _) = evaluate(&AlertState::default(), &observation, &rules(1, 1), slot(0));
    let mut next = observation.clone();
    next.started_at = slot(1);
    next.status = Status::Ok;
    next.reason = Reason::RecipientAccepted;
    let (_, events) = evaluate(&state, &next, &rules(1, 1), slot(1));
    assert_eq!(
        events[0].dedup_key,
        "contoso/smtp_rcpt/a%2Fb%25c@contoso.com/1/resolved"
    );
    assert_eq!(events[0].target, "a/b%c@contoso.com");
}

#[test]
fn accessors_answer_firing_pending_and_blind() {
    let state = run(&Rules::defaults(), "OC").state;
    assert!(!state.is_firing() && state.is_pending());
    assert_eq!(state.pending_since(), Some(slot(1)));

    let state = run(&Rules::defaults(), "OCWU").state;
    assert!(state.is_firing() && !state.is_pending() && !state.is_blind());
    assert_eq!(state.firing_since(), Some(slot(1)));
    assert_eq!(state.severity(), Some(Severity::Warning));
    assert_eq!(state.notified_episode(), Some(1));
    assert_eq!(state.last_seen(), Some(slot(3)));

    let state = run(&Rules::defaults(), "CC U*7").state;
    assert!(state.is_firing() && state.is_blind());
    assert_eq!(state.blind_since(), Some(slot(2)));

    // Reality and what was sent differ while a flap is held back.
    let state = run(&rules(1, 1), "COC").state;
    assert!(state.is_firing());
    assert_eq!(state.notified_episode(), None);

    let state = run(&Rules::defaults(), "CCO").state;
    assert!(!state.is_firing() && !state.is_pending());
    assert_eq!(state.firing_since(), None);
}

#[test]
fn state_is_compact_versioned_json_that_tolerates_old_and_new_fields() {
    assert_eq!(serde_json::to_string(&AlertState::default()).unwrap(), "{}");
    assert_eq!(
        serde_json::from_str::<AlertState>("{}").unwrap(),
        AlertState::default()
    );

    let state = run(&Rules::defaults(), "WWC U*7").state;
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.starts_with(r#"{"v":1,"#), "{json}");
    assert!(json.len() < 600, "{} bytes: {json}", json.len());
    assert_eq!(serde_json::from_str::<AlertState>(&json).unwrap(), state);

    // A newer daemon's extra field is ignored rather than making the state unreadable.
    let newer = json.replacen('{', r#"{"acked_by":"ops","#, 1);
    assert_eq!(serde_json::from_str::<AlertState>(&newer).unwrap(), state);

    // An ok state after an episode keeps only what the windows and replay guard need.
    let quiet = serde_json::to_string(&run(&Rules::defaults(), "CCO").state).unwrap();
    assert!(!quiet.contains("firing\""), "{quiet}");
    assert!(quiet.contains("resolved_at"), "{quiet}");
}

#[test]
fn a_reloaded_state_continues_exactly_where_it_left_off() {
    // Store the state after every observation, read it back, go on: same events as one run.
    let pattern = expand("OCC U*7 O C*60 (CO)*30");
    let rules = Rules::defaults();
    let mut state = AlertState::default();
    let mut events = Vec::new();
    for (index, verdict) in pattern.chars().enumerate() {
        let json = serde_json::to_string(&state).unwrap();
        let reloaded: AlertState = serde_json::from_str(&json).unwrap();
        let (next, new) = evaluate(
            &reloaded,
            &observation(verdict, slot(index)),
            &rules,
            slot(index),
        );
        events.extend(new.into_iter().map(|e| (index, e)));
        state = next;
    }
    assert_eq!(events, run(&rules, &pattern).events);
}

#[test]
fn a_critical_page_is_known_from_its_firing_until_it_resolves() {
    // Warning first: nothing critical has been paged.
    let warning = run(&rules(1, 1), "OW");
    assert_eq!(warning.state.critical_page(), None);
    assert_eq!(
        warning
            .state
            .last_problem()
            .map(|(critical, reason, _)| (critical, reason)),
        Some((false, "spf_missing"))
    );
    // Escalated from warning to critical at slot 3: the page dates from the escalation.
    let escalated = run(&rules(1, 1), "OWWC");
    let page = escalated.state.critical_page().unwrap();
    assert_eq!(
        (page.episode, page.since, page.paged_at),
        (1, slot(1), slot(3))
    );
    // A repeat does not move it: the escalation timer counts from the first critical page.
    let repeated = run(&Rules::defaults(), "CC U*60");
    let page = repeated.state.critical_page().unwrap();
    assert_eq!((page.episode, page.paged_at), (1, slot(1)));
    assert!(repeated
        .events
        .iter()
        .any(|(_, event)| event.kind == EventKind::Repeat));
    // Resolved: nothing is paged any more, and the next episode has its own number.
    let resolved = run(&rules(1, 1), "CO");
    assert_eq!(resolved.state.critical_page(), None);
    // (After the flapping window: a new Firing within it would be held back.)
    let again = run(&rules(1, 1), "CO O*48 C");
    let page = again.state.critical_page().unwrap();
    assert_eq!(page.episode, 2);
    let (critical, reason, summary) = again.state.last_problem().unwrap();
    assert!(critical);
    assert_eq!(reason, "recipient_not_found");
    assert!(summary.contains("5.1.10"), "{summary}");
}
