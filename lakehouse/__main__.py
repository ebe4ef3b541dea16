from lakehouse.ops.cli.main import main

main()
