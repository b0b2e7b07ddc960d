"""Transfer from imperfect reward models by policy coverage (empirical TPO; Huang et al., ICML 2025): online
iterative DPO whose data collection borrows responses from the source reward whose best-of-N picks the human
(an annotation-budgeted judge) prefers most often, chosen by a UCB on that win rate."""
