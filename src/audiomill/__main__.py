from audiomill.cli import main

raise SystemExit(main())
