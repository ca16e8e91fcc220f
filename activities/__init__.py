"""The activities: the dossier's writes, letters and alerts over SMTP, the working-day calendar, the yearly report."""
