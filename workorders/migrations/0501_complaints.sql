-- Complaints (rules S3, S5): register -> analyse cause and responsible party -> agree a
-- solution -> send the outcome -> close. Every request is answered within 24 h; the outcome goes
-- back to the customer within 2 working days of the complaint (the jurisdiction's calendar).
CREATE TABLE complaints (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id          topic_id NOT NULL REFERENCES devices (id),  -- the asset it is about
    site_id            bigint NOT NULL REFERENCES sites (id),
    firm_id            bigint REFERENCES maintenance_firms (id),  -- the firm in force then
    received_at        timestamptz NOT NULL,
    channel            text NOT NULL CHECK (channel IN (
                           'phone', 'email', 'visit', 'letter', 'web', 'regulator')),
    complainant        text NOT NULL CHECK (complainant <> ''),
    contact            text NOT NULL DEFAULT '',
    subject            text NOT NULL CHECK (subject <> ''),
    status             text NOT NULL DEFAULT 'registered' CHECK (status IN (
                           'registered', 'analysed', 'solution_agreed', 'closed')),
    answer_by          timestamptz NOT NULL,
    answered_at        timestamptz,
    outcome_by         timestamptz NOT NULL,
    outcome_sent_at    timestamptz,
    cause              text,
    responsible_party  text CHECK (responsible_party IN (
                           'firm', 'user_unit', 'manufacturer', 'third_party', 'none')),
    solution           text,
    work_order_id      bigint REFERENCES work_orders (id),  -- follow-up work, if any
    closed_at          timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX complaints_firm_idx ON complaints (firm_id, received_at);
CREATE INDEX complaints_device_idx ON complaints (device_id, received_at);

CREATE TABLE complaint_steps (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    complaint_id  bigint NOT NULL REFERENCES complaints (id),
    step          text NOT NULL CHECK (step IN (
                      'registered', 'answered', 'analysed', 'solution_agreed', 'outcome_sent',
                      'closed', 'breach', 'note')),
    at            timestamptz NOT NULL,
    actor         text NOT NULL CHECK (actor <> ''),
    note          text NOT NULL DEFAULT '',
    details       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX complaint_steps_complaint_idx ON complaint_steps (complaint_id, id);
CREATE TRIGGER complaint_steps_append_only BEFORE UPDATE OR DELETE ON complaint_steps
    FOR EACH ROW EXECUTE FUNCTION retention_guard();

CREATE TABLE complaint_breaches (
    complaint_id  bigint NOT NULL REFERENCES complaints (id),
    deadline      text NOT NULL CHECK (deadline IN ('answer', 'outcome')),
    due_at        timestamptz NOT NULL,
    detected_at   timestamptz NOT NULL,
    PRIMARY KEY (complaint_id, deadline)
);
