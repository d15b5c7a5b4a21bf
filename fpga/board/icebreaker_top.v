// iCEBreaker (iCE40 UP5K, 12 MHz oscillator, FTDI UART on channel B) top for the chip.
// A power-on reset holds the chip for 16 cycles; the user button resets it too.
// Green LED: heartbeat. Red LED: an error flag (uncorrectable, watchdog, job error).
`default_nettype none
module icebreaker_top #(
    parameter integer HARDEN = 1
) (
    input  wire clk,      // 12 MHz
    input  wire btn_n,    // active low
    input  wire rx,       // from the FTDI
    output wire tx,       // to the FTDI
    output wire ledr_n,   // active low
    output wire ledg_n    // active low
);
    reg [3:0] por = 4'd0;
    always @(posedge clk) if (!(&por)) por <= por + 1'b1;
    wire rst = !(&por) || !btn_n;
    wire [2:0] led;

    // The hardened chip fills 94% of the UP5K's logic cells; the link's FEC decoder needs
    // about 470 more, so the hardened bitstream is built without it (the chip says so in
    // BUILD[9] and PING's flags, and the HAL then sends it only version-1 frames).
    localparam integer FEC = HARDEN ? 0 : 1;

    orbithil_chip #(
        .HARDEN(HARDEN),
        .FEC(FEC),
        .CLKS_PER_BIT(104),  // 12 MHz / 115200 baud
        .MEM_WORDS(2048)
    ) u_chip (
        .clk(clk), .rst(rst), .uart_rx(rx), .uart_tx(tx), .led(led)
    );

    assign ledg_n = !led[0];
    assign ledr_n = !led[2];
endmodule
