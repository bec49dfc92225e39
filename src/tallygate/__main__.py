from tallygate.cli.main import main

main()
