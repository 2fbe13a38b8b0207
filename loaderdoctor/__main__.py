from loaderdoctor.cli import main

main()
