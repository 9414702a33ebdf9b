-- What HTTP checks learned about a target and need again on the next run, surviving restarts:
-- the object id of a watched identity (a soft-deleted user's UPN changes, so after first sight
-- it is looked up by id), a domain's namespace type (drift Managed <-> Federated) and the tenant
-- id a domain resolved to. Only the keys in tw_core::REMEMBERED_FACTS are kept.
CREATE TABLE learned_facts (
    tenant     TEXT    NOT NULL,
    check_kind TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    -- JSON object of fact name -> string value; merged with json_patch, so a run that did not
    -- learn a fact keeps the earlier value.
    facts      TEXT    NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, check_kind, target)
) STRICT, WITHOUT ROWID;
