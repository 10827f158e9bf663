"""Reporting: tables and findings worded from the numbers (report, findings), generated documentation (docs),
and what the app's pages compute from (explore, images, sign_examples). Nothing here trains."""
