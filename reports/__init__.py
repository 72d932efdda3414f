"""KPI reports: rescue KPIs (rule R7) and the monthly firm report (rule A4), JSON or CSV."""
