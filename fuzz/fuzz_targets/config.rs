//! Fuzz target `config`: any UTF-8 text as tenantwatch.toml, through `tw_core::config::parse`
//! (what `check-config`, start-up and SIGHUP run) and, when it is valid, the scheduler's plan.
//! An operator's typo must give a list of problems with their lines, never a crash; a
//! reload of a bad file must leave the running config alone, which it can only do if parsing
//! returns.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tw_core::config::parse(text) {
        Ok(config) => {
            for job in tw_probe::plan(&config) {
                assert!(!job.targets().is_empty(), "a job without a target");
            }
        }
        Err(errors) => {
            // The text the operator sees, with every problem and its line.
            assert!(!errors.to_string().is_empty());
        }
    }
});
