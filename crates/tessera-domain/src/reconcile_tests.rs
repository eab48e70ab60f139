use super::*;

fn ev(id: i64) -> RevocationEvent {
    RevocationEvent::Jti {
        jti: format!("j{id}"),
        until: 10_000,
    }
}

fn row(id: i64, xid: Option<u64>) -> LogRow {
    LogRow {
        id,
        xid,
        event: ev(id),
    }
}

/// A SQLite page: rows by id, no snapshot.
fn page(ids: &[i64]) -> LogPage {
    LogPage {
        rows: ids.iter().map(|&id| row(id, None)).collect(),
        ..LogPage::default()
    }
}

fn ids(d: &Delivery) -> Vec<i64> {
    d.events.iter().map(|(id, _)| *id).collect()
}

#[test]
fn in_order_ids_leave_no_holes() {
    let mut c = LogCursor::new(
        LogStart {
            high: 5,
            snapshot: None,
        },
        90,
    );
    let d = c.take(page(&[6, 7, 8]), 100);
    assert_eq!(ids(&d), vec![6, 7, 8]);
    assert_eq!((c.high(), c.query().holes, c.caught_up()), (8, vec![], 100));
}

#[test]
fn a_late_commit_is_caught_and_its_hole_closed() {
    let mut c = LogCursor::new(
        LogStart {
            high: 5,
            snapshot: None,
        },
        90,
    );
    // 7 committed before 6.
    c.take(page(&[7]), 100);
    assert_eq!((c.high(), c.query().holes), (7, vec![6]));
    c.take(page(&[6, 8]), 101);
    assert_eq!((c.high(), c.query().holes), (8, vec![]));
}

#[test]
fn a_rolled_back_id_stops_being_asked_for() {
    let mut c = LogCursor::new(LogStart::default(), 90);
    c.take(page(&[2]), 100);
    c.take(page(&[]), 100 + HOLE_LIFETIME - 1);
    assert_eq!(c.query().holes, vec![1]);
    c.take(page(&[]), 100 + HOLE_LIFETIME);
    assert!(c.query().holes.is_empty());
}

#[test]
fn a_jump_is_not_chased() {
    let mut c = LogCursor::new(LogStart::default(), 90);
    c.take(page(&[1_000_000]), 100);
    assert_eq!((c.high(), c.query().holes.len()), (1_000_000, 0));
}

fn snap(xmin: u64, xmax: u64) -> Option<Snapshot> {
    Some(Snapshot { xmin, xmax })
}

/// A commit later than the hole lifetime, and later than anything the
/// cursor tracks: the watermark delivers it, once, as late; meanwhile the
/// view's age stands at the last pull the watermark covers.
#[test]
fn the_watermark_delivers_a_commit_however_late() {
    // Transaction 100 (row 6) is in flight when the view starts.
    let mut c = LogCursor::new(
        LogStart {
            high: 5,
            snapshot: snap(100, 101),
        },
        1000,
    );
    assert_eq!(c.query().watermark, Some(100));
    // Row 7 (xid 101) commits; 100 still holds the watermark.
    let d = c.take(
        LogPage {
            rows: vec![row(7, Some(101))],
            swept: vec![],
            watermark: Some(100),
            xmax: Some(102),
        },
        1001,
    );
    assert_eq!((ids(&d), d.late), (vec![7], 0));
    // Long past the hole lifetime: no hole left, the age frozen at the start.
    for t in 1002..1000 + 2 * HOLE_LIFETIME {
        c.take(
            LogPage {
                watermark: Some(100),
                xmax: Some(102),
                ..LogPage::default()
            },
            t,
        );
    }
    assert!(c.query().holes.is_empty());
    assert_eq!(c.caught_up(), 1000);
    // 100 commits: the sweep of [100, 102) returns rows 6 and 7; 6 is
    // delivered (late), 7 is not delivered twice, and the view is current.
    let now = 1000 + 2 * HOLE_LIFETIME;
    let d = c.take(
        LogPage {
            rows: vec![],
            swept: vec![row(6, Some(100)), row(7, Some(101))],
            watermark: Some(102),
            xmax: Some(102),
        },
        now,
    );
    assert_eq!((ids(&d), d.late), (vec![6], 1));
    assert_eq!((c.caught_up(), c.query().watermark), (now, Some(102)));
}

/// A row the sweep returns before the id cursor reaches it (the id query's
/// row limit) is not delivered again by the id cursor.
#[test]
fn a_row_swept_ahead_of_the_cursor_is_not_delivered_twice() {
    let mut c = LogCursor::new(
        LogStart {
            high: 0,
            snapshot: snap(10, 10),
        },
        0,
    );
    let d = c.take(
        LogPage {
            rows: vec![row(1, Some(10))],
            swept: vec![row(1, Some(10)), row(2, Some(11))],
            watermark: Some(12),
            xmax: Some(12),
        },
        1,
    );
    assert_eq!((ids(&d), d.late), (vec![1, 2], 0));
    let d = c.take(
        LogPage {
            rows: vec![row(2, Some(11)), row(3, Some(12))],
            swept: vec![],
            watermark: Some(12),
            xmax: Some(13),
        },
        2,
    );
    assert_eq!(ids(&d), vec![3]);
    // Row 3 (xid 12) is swept once 12 has ended: not delivered again.
    let d = c.take(
        LogPage {
            swept: vec![row(3, Some(12))],
            watermark: Some(13),
            xmax: Some(13),
            ..LogPage::default()
        },
        3,
    );
    assert!(d.events.is_empty());
    assert_eq!(c.caught_up(), 3);
}
