-- Task records: FooocusAPI's columns (generate_record) plus error, seeds, messages and url_base.
-- result holds the output files relative to the output folder ("YYYY-MM-DD/name.png");
-- URLs are built when a record is served.
CREATE TABLE generate_record (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    req_params TEXT NOT NULL,
    in_queue_mills INTEGER NOT NULL,
    start_mills INTEGER,
    finish_mills INTEGER,
    task_status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    webhook_url TEXT,
    result TEXT NOT NULL DEFAULT '[]',
    seeds TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    messages TEXT NOT NULL DEFAULT '[]',
    url_base TEXT
);
CREATE INDEX generate_record_in_queue ON generate_record (in_queue_mills);
CREATE INDEX generate_record_status ON generate_record (task_status);
