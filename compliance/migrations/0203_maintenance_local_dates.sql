-- Rules M1, M2: the local date (site time zone) of each tier's last verified visit, kept beside
-- the instant so that the sweep compares dates instead of converting 400,000 instants per run.
-- service.refresh_all_clocks() recomputes them (run it after changing a site's time zone).
ALTER TABLE maintenance_clocks
    ADD COLUMN half_monthly_on date,
    ADD COLUMN quarterly_on date,
    ADD COLUMN semi_annual_on date,
    ADD COLUMN annual_on date;

UPDATE maintenance_clocks k SET
    half_monthly_on = (k.half_monthly_at AT TIME ZONE s.timezone)::date,
    quarterly_on = (k.quarterly_at AT TIME ZONE s.timezone)::date,
    semi_annual_on = (k.semi_annual_at AT TIME ZONE s.timezone)::date,
    annual_on = (k.annual_at AT TIME ZONE s.timezone)::date
FROM devices d JOIN sites s ON s.id = d.site_id
WHERE d.id = k.device_id;
