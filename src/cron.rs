//! The one cron parser: 6-field expressions (seconds first) or `@` nicknames, read in UTC with
//! the croner settings tokio-cron-scheduler uses, so that what `config` validates, what the
//! scheduler fires and what `policy::evaluate` computes as a rule's periods always agree. Pure.

/// Parses a 6-field cron expression (or `@` nickname) with the croner settings
/// tokio-cron-scheduler uses: seconds required, day-of-month AND day-of-week. Poll schedules and
/// policy rule schedules are both read this way.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
}
