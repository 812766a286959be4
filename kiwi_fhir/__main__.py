"""``python -m kiwi_fhir``: the ``kiwi-fhir`` command where no console script is
installed, e.g. a lent GPU machine that runs the package from a copied tree."""

from kiwi_fhir.cli import main

raise SystemExit(main())
