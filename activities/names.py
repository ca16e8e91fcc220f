"""Activity names, shared by the workflow (which calls them by name) and the worker, and the failure types
the mail activities raise for the workflow to tell apart."""

PLAN_DEADLINE = "plan_deadline"
OPEN_DOSSIER = "open_dossier"
UPDATE_DOSSIER = "update_dossier"
PURGE_DOSSIER = "purge_dossier"
SEND_LETTER = "send_letter"
STAGE_LETTERS = "stage_letters"
SEND_STORED_LETTER = "send_stored_letter"
SEND_ALERT = "send_alert"

# The yearly analysis (workflows/analysis.py, activities/analysis.py).
COMPUTE_ANNUAL_REPORT = "compute_annual_report"
STORE_ANNUAL_REPORT = "store_annual_report"
MAIL_ANNUAL_REPORT = "mail_annual_report"

# The info@ mailbox (workflows/mailbox.py, activities/mailbox.py).
LIST_NEW_MAIL = "list_new_mail"
PROCESS_MAIL = "process_mail"
QUARANTINE_MAIL = "quarantine_mail"
SEND_MAILBOX_ALERT = "send_mailbox_alert"

# The daily retention sweep (workflows/retention.py, activities/retention.py).
SWEEP_EXPIRED_DOSSIERS = "sweep_expired_dossiers"
MAIL_SWEEP_REPORT = "mail_sweep_report"

# Failure types (ApplicationError.type) of the mail activities (activities/outbox.py, activities/mail.py).
#: The recipient was refused for good.
UNDELIVERABLE = "LetterUndeliverable"
#: SMTP could not tell twice whether the message was taken: it waits for staff.
UNCERTAIN = "MessageUncertain"
#: A letter to be sent from the dossier whose personal data has been erased.
LETTER_ERASED = "LetterErased"
