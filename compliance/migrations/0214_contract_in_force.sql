-- The sweep reads each elevator's contract in force by its device (compliance.maintenance
-- service.policy_sql): a plain index on the device, so that finding it costs the same at a
-- thousand contracts and at a million. Without it the planner joined every contract in force
-- today with each elevator examined (7,000 elevators x 100,000 contracts on a day's sweep).
CREATE INDEX contracts_device_idx ON contracts (device_id);
