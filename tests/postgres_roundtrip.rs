//! A round trip through the real PostgreSQL server.

use skolflode_testkit::TestDatabase;

#[tokio::test]
async fn postgres_round_trip() -> anyhow::Result<()> {
    let db = TestDatabase::connect().await?;
    let client = db.client();
    client
        .batch_execute(
            "CREATE TABLE teacher_student (
                 week text NOT NULL,
                 teacher_key text NOT NULL,
                 student_key text NOT NULL,
                 lessons integer NOT NULL,
                 minutes bigint NOT NULL,
                 PRIMARY KEY (week, teacher_key, student_key))",
        )
        .await?;
    let rows: [(&str, &str, &str, i32, i64); 3] = [
        ("2025-W07", "t1", "s1", 4, 160),
        ("2025-W07", "t1", "s2", 3, 120),
        ("2025-W08", "t2", "s1", 5, 300),
    ];
    let insert = client
        .prepare("INSERT INTO teacher_student VALUES ($1, $2, $3, $4, $5)")
        .await?;
    for (week, t, s, lessons, minutes) in rows {
        client
            .execute(&insert, &[&week, &t, &s, &lessons, &minutes])
            .await?;
    }
    let back = client
        .query(
            "SELECT week, teacher_key, student_key, lessons, minutes
             FROM teacher_student ORDER BY week, teacher_key, student_key",
            &[],
        )
        .await?;
    let back: Vec<(String, String, String, i32, i64)> = back
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected: Vec<(String, String, String, i32, i64)> = rows
        .iter()
        .map(|(w, t, s, l, m)| (w.to_string(), t.to_string(), s.to_string(), *l, *m))
        .collect();
    assert_eq!(back, expected);

    let total: i64 = client
        .query_one(
            "SELECT sum(minutes)::bigint FROM teacher_student WHERE week = '2025-W07'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(total, 280);

    // The table lives in the test's own schema, not in public.
    let schema: String = client
        .query_one(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'teacher_student'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(schema, db.schema());

    db.cleanup().await?;
    Ok(())
}
