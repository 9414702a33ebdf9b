//! Placeholder until the Postfix instance script lands.
