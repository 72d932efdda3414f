-- The fleet registry (issue 13). The registry tables were created by the core migration before
-- the fleet domain existed; every change to them since is the fleet's. This one adds the natural
-- keys an import file names things by, retirement (a retired row keeps its history), Modbus
-- addresses, the statutory facts of a lift (rule M9, periodic inspection), safety managers,
-- technicians' qualifications and the MQTT credentials of gateways and smart poles.

-- Sites are named in files by a code of their own (a user unit names its sites freely).
CREATE SEQUENCE sites_code_seq;
ALTER TABLE sites ADD COLUMN code topic_id;
UPDATE sites SET code = 'site-' || id;
SELECT setval('sites_code_seq', coalesce((SELECT max(id) FROM sites), 0) + 1, false);
ALTER TABLE sites ALTER COLUMN code SET DEFAULT 'site-' || nextval('sites_code_seq');
ALTER TABLE sites ALTER COLUMN code SET NOT NULL;
ALTER TABLE sites ADD CONSTRAINT sites_code_key UNIQUE (code);
ALTER SEQUENCE sites_code_seq OWNED BY sites.code;

ALTER TABLE jurisdictions ADD COLUMN retired_at timestamptz;
ALTER TABLE user_units ADD COLUMN retired_at timestamptz;
ALTER TABLE sites ADD COLUMN retired_at timestamptz;
ALTER TABLE maintenance_firms ADD COLUMN retired_at timestamptz;
ALTER TABLE manufacturers ADD COLUMN retired_at timestamptz;
ALTER TABLE gateways ADD COLUMN retired_at timestamptz;
-- a retired technician is inactive (rule M10 and dispatch read ``active``)
ALTER TABLE technicians ADD COLUMN retired_at timestamptz,
    ADD COLUMN qualifications text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT technicians_retired_inactive CHECK (retired_at IS NULL OR NOT active);

-- A device's Modbus address behind its gateway (none for devices that publish themselves) and,
-- for lifts, the statutory facts a regulator tracks: the registration certificate (使用登记证)
-- and the next periodic inspection (定期检验) date.
ALTER TABLE devices
    ADD COLUMN modbus_host text CHECK (modbus_host <> ''),
    ADD COLUMN modbus_port integer CHECK (modbus_port BETWEEN 1 AND 65535),
    ADD COLUMN modbus_unit integer CHECK (modbus_unit BETWEEN 0 AND 255),
    ADD COLUMN registration_code text CHECK (registration_code <> ''),
    ADD COLUMN next_inspection_due date,
    ADD CONSTRAINT devices_modbus_complete
        CHECK ((modbus_host IS NULL) = (modbus_port IS NULL)
               AND (modbus_host IS NULL) = (modbus_unit IS NULL));
CREATE UNIQUE INDEX devices_registration_code_key ON devices (registration_code);
CREATE UNIQUE INDEX devices_modbus_address_key ON devices (gateway_id, modbus_host, modbus_port,
    modbus_unit) WHERE decommissioned_at IS NULL;
CREATE INDEX devices_inspection_due_idx ON devices (next_inspection_due)
    WHERE kind = 'elevator' AND decommissioned_at IS NULL;

-- A user unit's safety managers (安全管理员): they sign off maintenance records (rule M4).
CREATE TABLE safety_managers (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_unit_id            bigint NOT NULL REFERENCES user_units (id),
    name                    text NOT NULL CHECK (name <> ''),
    phone                   text,
    certificate_no          text NOT NULL UNIQUE CHECK (certificate_no <> ''),
    certificate_expires_on  date,
    site_id                 bigint REFERENCES sites (id),
    created_at              timestamptz NOT NULL DEFAULT now(),
    retired_at              timestamptz
);
INSERT INTO safety_managers (user_unit_id, name, phone, certificate_no)
SELECT id, safety_manager_name, safety_manager_phone, 'unit-' || id
FROM user_units WHERE safety_manager_name IS NOT NULL;
ALTER TABLE user_units DROP COLUMN safety_manager_name, DROP COLUMN safety_manager_phone;

-- MQTT credentials of gateways, smart poles (their own gateway) and the platform's services.
-- Only Mosquitto's PBKDF2-SHA512 hash of a password is kept; the broker's password and ACL
-- files are written from this table (``vigil fleet credentials``).
CREATE TABLE mqtt_credentials (
    username        topic_id PRIMARY KEY,
    principal_type  text NOT NULL CHECK (principal_type IN ('gateway', 'device', 'service')),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$7$%'),
    issued_at       timestamptz NOT NULL,
    revoked_at      timestamptz
);

-- A contract is named by its device and first day (its natural key in import files).
CREATE UNIQUE INDEX contracts_device_start_key ON contracts (device_id, lower(period));
