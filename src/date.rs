//! Dates in UTC, computed without the C library or time zone files
//! (sandboxed roles read none): the civil date of a Unix time, and the
//! two forms mail needs, RFC 5322's (`Date:`, `Received:`) and asctime(3)'s
//! (the mbox `From ` line).
//!
//! Trusts: nothing; any i64 gives a date.

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A Unix time broken down in UTC.
struct Civil {
    year: i64,
    /// 1..=12.
    month: i64,
    /// 1..=31.
    day: i64,
    /// 0 is Sunday.
    weekday: usize,
    hour: i64,
    minute: i64,
    second: i64,
}

fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
    }
}

/// `Thu, 1 Jan 1970 00:00:00 +0000`.
pub fn rfc5322_date(unix: u64) -> String {
    let c = civil(i64::try_from(unix).unwrap_or(i64::MAX / 2));
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// asctime(3)'s form without its newline: `Sun Nov 22 12:06:37 2026`.
pub fn asctime(unix: i64) -> String {
    let c = civil(unix);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[c.weekday],
        MONTHS[(c.month - 1) as usize],
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}
