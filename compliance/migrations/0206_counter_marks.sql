-- Rule E4: cumulative counters never go backwards except a declared rollover. The condition
-- check keeps, per device and counter, the highest value it has seen; a reading below it is a
-- data-quality event (in the compliance log) and an alarm, and becomes the new mark.
CREATE TABLE counter_marks (
    device_id  topic_id NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric     text NOT NULL,
    value      double precision NOT NULL,
    ts         timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric)
);
